package vhost_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

type recorder struct {
	mu   sync.Mutex
	last *vhost.Rings
	n    int
}

func (r *recorder) Publish(rs *vhost.Rings) {
	r.mu.Lock()
	r.last = rs
	r.n++
	r.mu.Unlock()
}

// rings returns the rings last published (nil once withdrawn).
func (r *recorder) rings() *vhost.Rings {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func serve(t *testing.T, opts vhost.Options, b vhost.Backend) (*vhost.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vm.sock")
	s, err := vhost.Listen(path, opts, b, quiet())
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, path
}

func dial(t *testing.T, path string) *vt.Frontend {
	t.Helper()
	f, err := vt.Dial(path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

const (
	fVersion1   = 1 << 32
	fProtocol   = 1 << 30
	fMrgRxbuf   = 1 << 15
	fEventIdx   = 1 << 29
	fIndirect   = 1 << 28
	fAnyLayout  = 1 << 27
	fNetMQ      = 1 << 22
	fInOrder    = 1 << 35
	fLogAll     = 1 << 26
	fRingPacked = 1 << 34
	pLogShmfd   = 1 << 1
	pMQ         = 1 << 0
	pReplyAck   = 1 << 3
	pMemSlots   = 1 << 15
)

func TestNegotiation(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	offered, err := f.GetU64(vt.GetFeatures)
	if err != nil {
		t.Fatal(err)
	}
	// The offloads: CSUM, GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN,
	// HOST_TSO4/6, HOST_ECN; no UFO.
	offloads := uint64(1<<0 | 1<<1 | 1<<7 | 1<<8 | 1<<9 | 1<<11 | 1<<12 | 1<<13)
	want := uint64(fVersion1|fProtocol|fMrgRxbuf|fEventIdx|fIndirect|fAnyLayout|fNetMQ|fInOrder|fMTU|fGuestAnnounce|fLogAll|fRingPacked) | offloads
	if offered != want {
		t.Fatalf("offered %#x, want %#x", offered, want)
	}
	po, err := f.GetU64(vt.GetProtocolFeatures)
	if err != nil {
		t.Fatal(err)
	}
	if po != pMQ|pReplyAck|pMemSlots|pInflight|pRARP|pNetMTU|pConfig|pResetDevice|pStatus|pLogShmfd {
		t.Fatalf("protocol features %#x", po)
	}
	if err := f.SetU64(vt.SetProtocolFeatures, po, false); err != nil {
		t.Fatal(err)
	}
	if n, err := f.GetU64(vt.GetQueueNum); err != nil || n != vhost.DefaultQueuePairs {
		t.Fatalf("GET_QUEUE_NUM = %d, %v", n, err)
	}
	if n, err := f.GetU64(vt.GetMaxMemSlots); err != nil || n != 32 {
		t.Fatalf("GET_MAX_MEM_SLOTS = %d, %v", n, err)
	}
	// REPLY_ACK negotiated: a request with NEED_REPLY gets an ack.
	if err := f.SetU64(vt.SetFeatures, fVersion1|fProtocol|fEventIdx, true); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if !st.Connected || !st.Negotiated || !equal(st.Features, []string{"event_idx", "protocol_features", "version_1"}) {
		t.Fatalf("status %+v", st)
	}
	if !equal(st.ProtocolFeatures, []string{"mq", "log_shmfd", "rarp", "reply_ack", "net_mtu", "config", "inflight_shmfd", "reset_device", "configure_mem_slots", "status"}) {
		t.Fatalf("protocol status %v", st.ProtocolFeatures)
	}
}

func equal(a, b []string) bool {
	m := map[string]bool{}
	for _, s := range a {
		m[s] = true
	}
	for _, s := range b {
		if !m[s] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestFeatureMask(t *testing.T) {
	mask, err := vhost.ParseFeatureMask([]string{"mrg_rxbuf", "EVENT_IDX"})
	if err != nil {
		t.Fatal(err)
	}
	_, path := serve(t, vhost.Options{DisabledFeatures: mask}, &recorder{})
	f := dial(t, path)
	offered, err := f.GetU64(vt.GetFeatures)
	if err != nil {
		t.Fatal(err)
	}
	if offered&(fMrgRxbuf|fEventIdx) != 0 || offered&fVersion1 == 0 {
		t.Fatalf("masked port offers %#x", offered)
	}
	if _, err := vhost.ParseFeatureMask([]string{"tso"}); err == nil {
		t.Fatal("unknown feature name accepted")
	}
	// Acking a masked-off feature is a protocol error.
	if err := f.SetU64(vt.SetFeatures, fVersion1|fMrgRxbuf, false); err != nil {
		t.Fatal(err)
	}
	if !f.Closed() {
		t.Fatal("connection kept after acking an unoffered feature")
	}
}

func TestProtocolFeaturesOffWithoutFeatureBit(t *testing.T) {
	mask, _ := vhost.ParseFeatureMask([]string{"protocol_features"})
	_, path := serve(t, vhost.Options{DisabledFeatures: mask}, &recorder{})
	f := dial(t, path)
	if po, err := f.GetU64(vt.GetProtocolFeatures); err != nil || po != 0 {
		t.Fatalf("protocol features %#x, %v; want none when the feature bit is masked", po, err)
	}
	// GET_QUEUE_NUM needs the MQ protocol feature.
	f.Send(vt.GetQueueNum, vt.FlagVersion, nil)
	if !f.Closed() {
		t.Fatal("GET_QUEUE_NUM served without MQ negotiated")
	}
}

// TestMalformed sends each kind of bad message on its own connection: the
// backend must drop that connection and keep serving.
func TestMalformed(t *testing.T) {
	memfd, _ := unix.MemfdCreate("t", 0)
	defer unix.Close(memfd)
	unix.Ftruncate(memfd, 1<<20)
	cases := map[string]func(f *vt.Frontend){
		"bad version":     func(f *vt.Frontend) { f.Send(vt.GetFeatures, 0x2, nil) },
		"reply flag":      func(f *vt.Frontend) { f.Send(vt.GetFeatures, vt.FlagVersion|vt.FlagReply, nil) },
		"unknown request": func(f *vt.Frontend) { f.Send(999, vt.FlagVersion, nil) },
		"huge size":       func(f *vt.Frontend) { f.SendSized(vt.SetFeatures, vt.FlagVersion, 1<<30, nil) },
		"short payload":   func(f *vt.Frontend) { f.Send(vt.SetFeatures, vt.FlagVersion, []byte{1, 2, 3}) },
		"long payload":    func(f *vt.Frontend) { f.Send(vt.SetVringNum, vt.FlagVersion, make([]byte, 16)) },
		"truncated":       func(f *vt.Frontend) { f.SendSized(vt.SetFeatures, vt.FlagVersion, 8, []byte{1}); f.C.CloseWrite() },
		"fd on GET":       func(f *vt.Frontend) { f.Send(vt.GetFeatures, vt.FlagVersion, nil, memfd) },
		"kick without fd": func(f *vt.Frontend) { f.Send(vt.SetVringKick, vt.FlagVersion, make([]byte, 8)) },
		"ring out of range": func(f *vt.Frontend) {
			p := make([]byte, 8)
			binary.LittleEndian.PutUint32(p, 200)
			binary.LittleEndian.PutUint32(p[4:], 256)
			f.Send(vt.SetVringNum, vt.FlagVersion, p)
		},
		"ring size not a power of two": func(f *vt.Frontend) {
			p := make([]byte, 8)
			binary.LittleEndian.PutUint32(p[4:], 100)
			f.Send(vt.SetVringNum, vt.FlagVersion, p)
		},
		"misaligned ring": func(f *vt.Frontend) {
			p := make([]byte, 40)
			binary.LittleEndian.PutUint64(p[8:], 0x1008)
			f.Send(vt.SetVringAddr, vt.FlagVersion, p)
		},
		"mem table fd count": func(f *vt.Frontend) {
			f.Send(vt.SetMemTable, vt.FlagVersion, vt.MemTablePayload(vt.Region{Size: 1 << 20}, vt.Region{GPA: 1 << 30, Size: 1 << 20, UAddr: 1 << 30}), memfd)
		},
		"mem table zero regions": func(f *vt.Frontend) { f.Send(vt.SetMemTable, vt.FlagVersion, vt.MemTablePayload(), memfd) },
		"mem table past memfd end": func(f *vt.Frontend) {
			f.Send(vt.SetMemTable, vt.FlagVersion, vt.MemTablePayload(vt.Region{Size: 2 << 20}), memfd)
		},
		"mem table overlapping": func(f *vt.Frontend) {
			f.Send(vt.SetMemTable, vt.FlagVersion, vt.MemTablePayload(vt.Region{Size: 1 << 19}, vt.Region{GPA: 1 << 18, Size: 1 << 19, UAddr: 1 << 30}), memfd, memfd)
		},
		"too many fds": func(f *vt.Frontend) {
			fds := make([]int, 12)
			for i := range fds {
				fds[i] = memfd
			}
			f.Send(vt.SetMemTable, vt.FlagVersion, vt.MemTablePayload(vt.Region{Size: 1 << 20}), fds...)
		},
		"mem slots not negotiated": func(f *vt.Frontend) { f.Send(vt.AddMemReg, vt.FlagVersion, make([]byte, 40), memfd) },
	}
	s, path := serve(t, vhost.Options{}, &recorder{})
	before := openFDs(t)
	for name, send := range cases {
		t.Run(name, func(t *testing.T) {
			f := dial(t, path)
			send(f)
			if !f.Closed() {
				t.Fatal("connection not closed")
			}
			if st := s.Status(); st.LastError == "" {
				t.Fatal("no error recorded for vhostctl")
			}
		})
	}
	// Still serving, and nothing leaked.
	f := dial(t, path)
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatalf("server dead after malformed input: %v", err)
	}
	f.Close()
	waitFDs(t, before)
}

// openFDs counts the process's open fds, for a baseline that waitFDs
// later compares against. Other goroutines close and open fds of their
// own meanwhile (a switch poller rebuilding its epoll set closes the old
// one before it creates the new), so it takes the largest of several
// counts: a baseline caught in such a gap is one low, and the correct
// count after the test then looks like a leak.
func openFDs(t *testing.T) int {
	n := 0
	for range 10 {
		n = max(n, len(fdList(t)))
		time.Sleep(time.Millisecond)
	}
	return n
}

func fdList(t *testing.T) []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"->"+l)
	}
	return out
}

func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := len(fdList(t))
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fds open, %d before: fds leaked: %v", n, want, fdList(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// guest is a fake VM on one switch port: memory in a memfd, a receive ring
// (0) and a transmit ring (1), set up over a real vhost-user connection.
type guest struct {
	f      *vt.Frontend
	rx, tx *vt.Ring
}

func connectGuest(t *testing.T, path string, features uint64) *guest {
	t.Helper()
	f := dial(t, path)
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Negotiate(features, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	return setupRings(t, f)
}

// setupRings sets up receive ring 0 and transmit ring 1 of 256 entries in
// f's memory and waits until the backend has handled them.
func setupRings(t *testing.T, f *vt.Frontend) *guest {
	t.Helper()
	g := &guest{f: f}
	var err error
	if g.rx, err = f.SetupRing(0, 256, 0); err != nil {
		t.Fatal(err)
	}
	if g.tx, err = f.SetupRing(1, 256, 16<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.rx.Close(); g.tx.Close() })
	// A request with a reply is a barrier: everything before it is handled.
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	return g
}

func waitEventfd(t *testing.T, fd int) {
	t.Helper()
	if err := vt.WaitReadable(fd, 5*time.Second); err != nil {
		t.Fatalf("no call on the eventfd: %v", err)
	}
	var b [8]byte
	unix.Read(fd, b[:])
}

func ethFrame(dst, src byte, n int) []byte {
	f := make([]byte, n)
	copy(f, []byte{2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src, 0x88, 0xb5})
	for i := 14; i < n; i++ {
		f[i] = byte(i * 7)
	}
	return f
}

func TestTrafficReconnectAndRingBase(t *testing.T) {
	sw, err := vswitch.New(vswitch.Config{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close) // after the servers' cleanups: they run last-in first-out
	pa, pb := vswitch.NewVMPort("a", 0, quiet()), vswitch.NewVMPort("b", 0, quiet())
	sw.AddPort(pa)
	sw.AddPort(pb)
	sw.Start()
	sa, pathA := serve(t, vhost.Options{}, pa)
	_, pathB := serve(t, vhost.Options{}, pb)
	feats := uint64(fVersion1 | fProtocol | fMrgRxbuf | fEventIdx | fIndirect)
	b := connectGuest(t, pathB, feats)
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})

	before := openFDs(t)
	for round := 0; round < 3; round++ {
		a := connectGuest(t, pathA, feats)
		frame := ethFrame(0xb, 0xa, 100+round)
		a.tx.Driver.AddIndirect([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: frame}})
		a.tx.KickNow()
		waitEventfd(t, b.rx.Call)
		used := b.rx.Driver.CollectUsed()
		b.rx.Driver.ArmCallback()
		if len(used) != 1 {
			t.Fatalf("round %d: b got %d buffers", round, len(used))
		}
		got := b.rx.Driver.Read(b.rx.Driver.DescAddr(used[0].ID), int(used[0].Len))
		if !bytes.Equal(got[12:], frame) {
			t.Fatalf("round %d: b got %x", round, got)
		}
		b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
		waitEventfd(t, a.tx.Call)
		if u := a.tx.Driver.CollectUsed(); len(u) != 1 {
			t.Fatalf("round %d: a's transmit buffer not returned", round)
		}
		if base, err := a.f.GetVringBase(1); err != nil || base != 1 {
			t.Fatalf("round %d: GET_VRING_BASE = %d, %v; want 1", round, base, err)
		}
		if st := sa.Status(); !st.Connected || len(st.Rings) != 2 || st.Rings[1].Running {
			t.Fatalf("round %d: status after GET_VRING_BASE: %+v", round, st.Rings)
		}
		// Guest goes away (reboot, QEMU restart): a new connection must
		// work, and the old one's memory and fds must be released.
		a.rx.Close()
		a.tx.Close()
		a.f.Close()
		waitFDs(t, before)
	}
	st := pb.Stats()
	if st.TxPackets != 3 {
		t.Fatalf("b counted %d delivered frames, want 3", st.TxPackets)
	}
}

// TestStatusShowsDataPathBreak: a ring the data path breaks (here the
// driver moves its avail index more than the ring size ahead) shows as
// broken in Status at once, while it is still published, not only after
// the frontend next stops it.
func TestStatusShowsDataPathBreak(t *testing.T) {
	rec := &recorder{}
	s, path := serve(t, vhost.Options{}, rec)
	g := connectGuest(t, path, fVersion1|fProtocol)
	rs := rec.rings()
	if rs == nil || len(rs.TX) == 0 {
		t.Fatal("no transmit ring published")
	}
	for _, r := range s.Status().Rings {
		if r.Broken != "" {
			t.Fatalf("ring %d broken before anything happened: %s", r.Index, r.Broken)
		}
	}
	g.tx.Driver.SetAvailIdx(1000) // more than 256 ahead
	// The test is the data path here: it holds the recorder's lock, as
	// Publish(nil) waits for a real poller to let go.
	rec.mu.Lock()
	n := rs.TX[0].Queue.Pending()
	rec.mu.Unlock()
	if n != 0 {
		t.Fatalf("a jump of the avail index left %d chains pending", n)
	}
	var tx *vhost.RingStatus
	st := s.Status()
	for i := range st.Rings {
		if st.Rings[i].Index == 1 {
			tx = &st.Rings[i]
		}
	}
	if tx == nil || !strings.Contains(tx.Broken, "avail index") {
		t.Fatalf("transmit ring status %+v, want it broken by the avail index jump", tx)
	}
}
