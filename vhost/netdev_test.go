package vhost_test

import (
	"bytes"
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

const (
	fMTU           = 1 << 3
	fGuestAnnounce = 1 << 21
	pRARP          = 1 << 2
	pNetMTU        = 1 << 4
	pConfig        = 1 << 9
	pResetDevice   = 1 << 13
	pStatus        = 1 << 16
	pAllNet        = pReplyAck | pRARP | pNetMTU | pConfig | pResetDevice | pStatus | pMQ
)

// negotiated dials path and negotiates VERSION_1 and PROTOCOL_FEATURES
// with the protocol features pf.
func negotiated(t *testing.T, path string, pf uint64) *vt.Frontend {
	t.Helper()
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pf); err != nil {
		t.Fatal(err)
	}
	return f
}

// sendAcked sends a request with NEED_REPLY and returns the ack's verdict.
func sendAcked(f *vt.Frontend, req uint32, payload []byte) error {
	if err := f.Send(req, vt.FlagVersion|vt.FlagNeedReply, payload); err != nil {
		return err
	}
	return f.Ack(req)
}

// TestStatus: SET_STATUS stores the device status and GET_STATUS returns
// exactly it, as QEMU's add-status (read, OR, write) and DPDK's
// virtio-user expect; vhostctl shows it.
func TestStatus(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := negotiated(t, path, pAllNet)
	for _, v := range []uint64{vhost.StatusFeaturesOK, 0xf, 0} {
		if err := f.SetU64(vt.SetStatus, v, true); err != nil {
			t.Fatalf("SET_STATUS %#x: %v", v, err)
		}
		if got, err := f.GetU64(vt.GetStatus); err != nil || got != v {
			t.Fatalf("GET_STATUS after SET_STATUS %#x: %#x, %v", v, got, err)
		}
		if st := s.Status(); st.DeviceStatus != v {
			t.Fatalf("status shows device status %#x, want %#x", st.DeviceStatus, v)
		}
	}
}

// TestStatusNeedsProtocolFeature: SET_STATUS without the STATUS protocol
// feature negotiated ends the connection, with the reason recorded.
func TestStatusNeedsProtocolFeature(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := negotiated(t, path, pReplyAck)
	if err := f.SetU64(vt.SetStatus, 0xf, false); err != nil {
		t.Fatal(err)
	}
	if !f.Closed() {
		t.Fatal("connection kept")
	}
	waitDisconnected(t, s)
	if got := s.Status().LastError; !strings.Contains(got, "needs protocol feature status") {
		t.Fatalf("last error %q", got)
	}
}

// TestStatusZeroThenVringBase is QEMU's stop (migration, guest reboot):
// SET_STATUS(0), then GET_VRING_BASE per ring, each answering the used
// index the driver sees; the device then starts again from there as
// QEMU restarts it (SET_STATUS(0xf) last) and traffic flows.
func TestStatusZeroThenVringBase(t *testing.T) {
	_, pathA, pathB := twoServers(t)
	b := connectGuest(t, pathB, fVersion1|fProtocol)
	fa := dial(t, pathA)
	if err := fa.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Negotiate(fVersion1|fProtocol, pAllNet); err != nil {
		t.Fatal(err)
	}
	if err := fa.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	a := setupRings(t, fa)
	if err := fa.SetU64(vt.SetStatus, 0xf, true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		exchange(t, a, b, 64)
	}
	if err := fa.SetU64(vt.SetStatus, 0, true); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*vt.Ring{a.rx, a.tx} {
		base, err := fa.GetVringBase(r.Index)
		if err != nil {
			t.Fatal(err)
		}
		if u := r.Driver.UsedIdx(); uint16(base) != u {
			t.Fatalf("ring %d stopped at base %d, used index %d", r.Index, base, u)
		}
		if err := fa.ResumeRing(r, uint16(base)); err != nil {
			t.Fatal(err)
		}
	}
	if err := fa.SetU64(vt.SetStatus, 0xf, true); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, 64)
}

// TestResetDevice: RESET_DEVICE stops and forgets every ring and the
// negotiated features and status, keeps the connection and its protocol
// features, and the device can be set up again on the same connection.
func TestResetDevice(t *testing.T) {
	sa, pathA, pathB := twoServers(t)
	b := connectGuest(t, pathB, fVersion1|fProtocol)
	fa := dial(t, pathA)
	if err := fa.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Negotiate(fVersion1|fProtocol, pAllNet); err != nil {
		t.Fatal(err)
	}
	if err := fa.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	a := setupRings(t, fa)
	if err := fa.SetU64(vt.SetStatus, 0xf, true); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, 64)

	if err := sendAcked(fa, vt.ResetDevice, nil); err != nil {
		t.Fatalf("RESET_DEVICE: %v", err)
	}
	st := sa.Status()
	if !st.Connected || st.Negotiated || st.DeviceStatus != 0 {
		t.Fatalf("after RESET_DEVICE: %+v; want connected, features and status cleared", st)
	}
	for _, r := range st.Rings {
		t.Fatalf("ring %+v left after RESET_DEVICE", r)
	}
	if got, err := fa.GetU64(vt.GetStatus); err != nil || got != 0 {
		t.Fatalf("GET_STATUS after reset: %#x, %v", got, err)
	}
	// The protocol features stay negotiated: GET_QUEUE_NUM (MQ) works.
	if n, err := fa.GetU64(vt.GetQueueNum); err != nil || n != vhost.DefaultQueuePairs {
		t.Fatalf("GET_QUEUE_NUM after reset: %d, %v", n, err)
	}

	// Set the device up again, as QEMU does when the driver restarts: the
	// driver's rings start over at index 0 (the old ones' eventfds are
	// closed by the test's cleanup).
	if err := fa.SetU64(vt.SetFeatures, fVersion1|fProtocol, true); err != nil {
		t.Fatal(err)
	}
	if err := fa.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	clear(fa.Memory[:32<<20])
	a = setupRings(t, fa)
	exchange(t, a, b, 64)
}

// TestResetDeviceNeedsProtocolFeature: without RESET_DEVICE negotiated
// the request ends the connection.
func TestResetDeviceNeedsProtocolFeature(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := negotiated(t, path, pReplyAck)
	if err := f.Send(vt.ResetDevice, vt.FlagVersion, nil); err != nil {
		t.Fatal(err)
	}
	if !f.Closed() {
		t.Fatal("connection kept")
	}
	waitDisconnected(t, s)
}

// TestNetSetMTU: NET_SET_MTU up to the port's MTU is accepted and shown;
// beyond it, or below 68, it is NACKed with the MTU unchanged and the
// connection kept. A port without an MTU takes any valid one.
func TestNetSetMTU(t *testing.T) {
	s, path := serve(t, vhost.Options{MTU: 1400}, &recorder{})
	f := negotiated(t, path, pAllNet)
	if st := s.Status(); st.MTU != 1400 {
		t.Fatalf("MTU %d before NET_SET_MTU, want the port's 1400", st.MTU)
	}
	if err := f.SetU64(vt.NetSetMTU, 1300, true); err != nil {
		t.Fatalf("NET_SET_MTU 1300: %v", err)
	}
	for _, bad := range []uint64{1401, 9000, 67, 0, 1 << 40} {
		if err := f.SetU64(vt.NetSetMTU, bad, true); err == nil {
			t.Fatalf("NET_SET_MTU %d accepted", bad)
		}
	}
	if st := s.Status(); st.MTU != 1300 || !st.Connected {
		t.Fatalf("MTU %d connected %v, want 1300 and connected", st.MTU, st.Connected)
	}
	if err := f.SetU64(vt.NetSetMTU, 1400, true); err != nil {
		t.Fatalf("NET_SET_MTU 1400: %v", err)
	}

	s2, path2 := serve(t, vhost.Options{}, &recorder{})
	f2 := negotiated(t, path2, pAllNet)
	if err := f2.SetU64(vt.NetSetMTU, 9000, true); err != nil {
		t.Fatalf("NET_SET_MTU 9000 on a port without an MTU: %v", err)
	}
	if err := f2.SetU64(vt.NetSetMTU, 65536, true); err == nil {
		t.Fatal("NET_SET_MTU 65536 accepted")
	}
	if st := s2.Status(); st.MTU != 9000 {
		t.Fatalf("MTU %d, want 9000", st.MTU)
	}
}

// TestNetSetMTUShortPayload: a NET_SET_MTU that is not a u64 ends the
// connection.
func TestNetSetMTUShortPayload(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := negotiated(t, path, pAllNet)
	if err := f.Send(vt.NetSetMTU, vt.FlagVersion|vt.FlagNeedReply, []byte{0xdc, 5}); err != nil {
		t.Fatal(err)
	}
	if !f.Closed() {
		t.Fatal("connection kept")
	}
	waitDisconnected(t, s)
	if got := s.Status().LastError; !strings.Contains(got, "NET_SET_MTU: payload is 2 bytes, want 8") {
		t.Fatalf("last error %q", got)
	}
}

// TestGetConfig reads the virtio-net config space, whole and in parts.
func TestGetConfig(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	_, path := serve(t, vhost.Options{MTU: 9000, QueuePairs: 4, MAC: mac}, &recorder{})
	f := negotiated(t, path, pAllNet)
	p, err := f.GetConfig(0, 24)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 12+24 || !bytes.Equal(p[:12], vt.ConfigPayload(0, 0, make([]byte, 24))[:12]) {
		t.Fatalf("reply %x", p)
	}
	c := p[12:]
	if !bytes.Equal(c[:6], mac[:]) {
		t.Fatalf("mac %x", c[:6])
	}
	le := binary.LittleEndian
	if st, pairs, mtu := le.Uint16(c[6:]), le.Uint16(c[8:]), le.Uint16(c[10:]); st != 1 || pairs != 4 || mtu != 9000 {
		t.Fatalf("status %d, max_virtqueue_pairs %d, mtu %d; want 1, 4, 9000", st, pairs, mtu)
	}
	if speed, duplex := le.Uint32(c[12:]), c[16]; speed != 0xffffffff || duplex != 0xff {
		t.Fatalf("speed %#x duplex %#x, want unknown", speed, duplex)
	}
	// A part: the MTU alone, after NET_SET_MTU changed it.
	if err := f.SetU64(vt.NetSetMTU, 1280, true); err != nil {
		t.Fatal(err)
	}
	p, err = f.GetConfig(10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 14 || le.Uint32(p) != 10 || le.Uint32(p[4:]) != 2 || le.Uint16(p[12:]) != 1280 {
		t.Fatalf("mtu read %x", p)
	}
}

// TestConfigOutOfRange: accesses beyond the config space (including ones
// whose offset+size overflows 32 bits) are answered with an empty payload
// (GET) or NACKed (SET), and the connection stays.
func TestConfigOutOfRange(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := negotiated(t, path, pAllNet)
	for _, c := range []struct{ off, size uint32 }{{20, 8}, {24, 1}, {0, 25}, {0xfffffffc, 8}, {0, 0}, {1 << 31, 4}} {
		p, err := f.GetConfig(c.off, c.size)
		if err != nil {
			t.Fatalf("GET_CONFIG %d+%d: %v", c.off, c.size, err)
		}
		if len(p) != 0 {
			t.Fatalf("GET_CONFIG %d+%d answered %x, want an empty payload", c.off, c.size, p)
		}
		if err := sendAcked(f, vt.SetConfig, vt.ConfigPayload(c.off, vt.ConfigMigration, make([]byte, c.size))); err == nil {
			t.Fatalf("SET_CONFIG %d+%d accepted", c.off, c.size)
		}
	}
	if !s.Status().Connected {
		t.Fatal("connection lost")
	}
}

// TestConfigMalformed: a config payload whose size field disagrees with
// its length, or exceeds 256 bytes, ends the connection.
func TestConfigMalformed(t *testing.T) {
	cases := map[string]struct {
		req     uint32
		payload []byte
		want    string
	}{
		"short":          {vt.GetConfig, make([]byte, 8), "payload is 8 bytes, want at least 12"},
		"size lies":      {vt.GetConfig, append(vt.ConfigPayload(0, 0, make([]byte, 4))[:12], 1, 2), "config access of 4 bytes carries 2"},
		"too big":        {vt.SetConfig, vt.ConfigPayload(0, 1, make([]byte, 300)), "config access of 300 bytes: at most 256"},
		"set size lies":  {vt.SetConfig, vt.ConfigPayload(0, 1, make([]byte, 4))[:14], "config access of 4 bytes carries 2"},
		"huge size word": {vt.GetConfig, vt.ConfigPayload(0, 0, nil)[:12], ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, path := serve(t, vhost.Options{}, &recorder{})
			f := negotiated(t, path, pAllNet)
			p := append([]byte(nil), c.payload...)
			if name == "huge size word" {
				binary.LittleEndian.PutUint32(p[4:], 0xffffffff)
				c.want = "config access of 4294967295 bytes"
			}
			if err := f.Send(c.req, vt.FlagVersion, p); err != nil {
				t.Fatal(err)
			}
			if !f.Closed() {
				t.Fatal("connection kept")
			}
			waitDisconnected(t, s)
			if got := s.Status().LastError; !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want %q", got, c.want)
			}
		})
	}
}

// TestSetConfig: a driver's write (flags 0) is refused, every field being
// read-only; a live migration's write is taken and read back.
func TestSetConfig(t *testing.T) {
	_, path := serve(t, vhost.Options{}, &recorder{})
	f := negotiated(t, path, pAllNet)
	mac := []byte{2, 0, 0, 0, 0, 9}
	if err := sendAcked(f, vt.SetConfig, vt.ConfigPayload(0, vt.ConfigFlags, mac)); err == nil {
		t.Fatal("driver's SET_CONFIG of the MAC accepted")
	}
	if err := sendAcked(f, vt.SetConfig, vt.ConfigPayload(0, 7, mac)); err == nil {
		t.Fatal("SET_CONFIG with unknown flags accepted")
	}
	if p, err := f.GetConfig(0, 6); err != nil || !bytes.Equal(p[12:], make([]byte, 6)) {
		t.Fatalf("MAC after refused writes: %x, %v", p, err)
	}
	if err := sendAcked(f, vt.SetConfig, vt.ConfigPayload(0, vt.ConfigMigration, mac)); err != nil {
		t.Fatalf("migration's SET_CONFIG: %v", err)
	}
	if p, err := f.GetConfig(0, 8); err != nil || !bytes.Equal(p[12:18], mac) || p[18] != 1 {
		t.Fatalf("config after the migration's write: %x, %v", p, err)
	}
}

// announcer is a Backend that records the RARPs it is asked to send and
// refuses the addresses in deny.
type announcer struct {
	recorder
	mu   sync.Mutex
	macs [][6]byte
	deny [6]byte
}

func (a *announcer) AnnounceRARP(mac [6]byte) error {
	if mac == a.deny {
		return vhost.ErrNotPermitted
	}
	a.mu.Lock()
	a.macs = append(a.macs, mac)
	a.mu.Unlock()
	return nil
}

func (a *announcer) sent() [][6]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][6]byte(nil), a.macs...)
}

// TestSendRARP: SEND_RARP hands the MAC in the first 6 bytes of its u64
// to the backend; a multicast or zero MAC, or one the port may not use,
// is NACKed and the connection kept.
func TestSendRARP(t *testing.T) {
	b := &announcer{deny: [6]byte{2, 0, 0, 0, 0, 0xee}}
	s, path := serve(t, vhost.Options{}, b)
	f := negotiated(t, path, pAllNet)
	mac := [6]byte{0x52, 0x54, 0, 1, 2, 3}
	if err := f.SendRARP(mac, true); err != nil {
		t.Fatalf("SEND_RARP: %v", err)
	}
	// QEMU sends it without NEED_REPLY: a reply barrier follows.
	if err := f.SendRARP(mac, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.GetU64(vt.GetStatus); err != nil {
		t.Fatal(err)
	}
	if got := b.sent(); len(got) != 2 || got[0] != mac || got[1] != mac {
		t.Fatalf("backend asked for %x", got)
	}
	for _, bad := range [][6]byte{{}, {1, 0, 0x5e, 0, 0, 1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, b.deny} {
		if err := f.SendRARP(bad, true); err == nil {
			t.Fatalf("SEND_RARP %x accepted", bad)
		}
	}
	if len(b.sent()) != 2 || !s.Status().Connected {
		t.Fatalf("refused RARPs reached the backend (%x) or dropped the connection", b.sent())
	}
}

// TestSendRARPBadRequests: a SEND_RARP that is not a u64, or comes
// without the RARP protocol feature, ends the connection; a backend that
// cannot send frames NACKs it.
func TestSendRARPBadRequests(t *testing.T) {
	t.Run("short", func(t *testing.T) {
		s, path := serve(t, vhost.Options{}, &announcer{})
		f := negotiated(t, path, pAllNet)
		if err := f.Send(vt.SendRARP, vt.FlagVersion, []byte{0x52, 0x54, 0, 1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		if !f.Closed() {
			t.Fatal("connection kept")
		}
		waitDisconnected(t, s)
		if got := s.Status().LastError; !strings.Contains(got, "SEND_RARP: payload is 6 bytes, want 8") {
			t.Fatalf("last error %q", got)
		}
	})
	t.Run("not negotiated", func(t *testing.T) {
		s, path := serve(t, vhost.Options{}, &announcer{})
		f := negotiated(t, path, pReplyAck)
		if err := f.SendRARP([6]byte{2, 0, 0, 0, 0, 1}, false); err != nil {
			t.Fatal(err)
		}
		if !f.Closed() {
			t.Fatal("connection kept")
		}
		waitDisconnected(t, s)
		if got := s.Status().LastError; !strings.Contains(got, "needs protocol feature rarp") {
			t.Fatalf("last error %q", got)
		}
	})
	t.Run("backend cannot send", func(t *testing.T) {
		s, path := serve(t, vhost.Options{}, &recorder{})
		f := negotiated(t, path, pAllNet)
		if err := f.SendRARP([6]byte{2, 0, 0, 0, 0, 1}, true); err == nil {
			t.Fatal("accepted")
		}
		if !s.Status().Connected {
			t.Fatal("connection lost")
		}
	})
}

// TestSendRARPThroughSwitch: SEND_RARP on A's socket, with A's guest
// silent and the pollers asleep, puts a valid RARP from the given MAC in
// B's receive ring.
func TestSendRARPThroughSwitch(t *testing.T) {
	_, pathA, pathB := twoServers(t)
	b := connectGuest(t, pathB, fVersion1|fProtocol)
	fa := dial(t, pathA)
	if err := fa.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Negotiate(fVersion1|fProtocol, pAllNet); err != nil {
		t.Fatal(err)
	}
	if err := fa.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	setupRings(t, fa)
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	time.Sleep(20 * time.Millisecond) // the pollers go to sleep
	mac := [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	if err := fa.SendRARP(mac, true); err != nil {
		t.Fatal(err)
	}
	waitEventfd(t, b.rx.Call)
	used := b.rx.Driver.CollectUsed()
	if len(used) != 1 {
		t.Fatalf("B got %d buffers", len(used))
	}
	f := b.rx.Driver.Read(b.rx.Driver.DescAddr(used[0].ID), int(used[0].Len))[12:]
	if len(f) != 60 || !bytes.Equal(f[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || !bytes.Equal(f[6:12], mac[:]) ||
		binary.BigEndian.Uint16(f[12:]) != 0x8035 || binary.BigEndian.Uint16(f[20:]) != 3 ||
		!bytes.Equal(f[22:28], mac[:]) || !bytes.Equal(f[32:38], mac[:]) {
		t.Fatalf("B got %x, want a RARP from %x", f, mac)
	}
}

// TestQueuePairsCapped: a port asked for more than MaxQueuePairs offers
// MaxQueuePairs, in GET_QUEUE_NUM and in the config space alike (the
// switch sizes its per-ring state by it).
func TestQueuePairsCapped(t *testing.T) {
	_, path := serve(t, vhost.Options{QueuePairs: 500}, &recorder{})
	f := negotiated(t, path, pAllNet)
	if n, err := f.GetU64(vt.GetQueueNum); err != nil || n != vhost.MaxQueuePairs {
		t.Fatalf("GET_QUEUE_NUM = %d, %v; want %d", n, err, vhost.MaxQueuePairs)
	}
	p, err := f.GetConfig(0, 24)
	if err != nil {
		t.Fatal(err)
	}
	if pairs := binary.LittleEndian.Uint16(p[12+8:]); pairs != vhost.MaxQueuePairs {
		t.Fatalf("max_virtqueue_pairs %d, want %d", pairs, vhost.MaxQueuePairs)
	}
}
