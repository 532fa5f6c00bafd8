package vhosttest

// Helpers for hostile-frontend tests: raw and partial writes, reading a
// REPLY_ACK's value instead of judging it, odd fds, and a Guest that sets
// up a whole virtio-net port (memory, receive ring 0, transmit ring 1) in
// one call. New helpers go here rather than in frontend.go.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// More request codes, as on the wire.
const (
	SetLogBase = 6
	SetLogFD   = 7
)

// Virtio and vhost-user feature bits the hostile tests negotiate.
const (
	FeatureIndirectDesc  = 1 << 28
	FeatureEventIdx      = 1 << 29
	FeatureProtocol      = 1 << 30
	FeatureVersion1      = 1 << 32
	ProtocolReplyAck     = 1 << 3
	ProtocolConfigMemSlt = 1 << 15
)

// Header encodes a message header.
func Header(req, flags, size uint32) []byte {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flags)
	binary.LittleEndian.PutUint32(b[8:], size)
	return b
}

// WriteRaw writes b as is, with no framing: a part of a message, or many
// messages at once.
func (f *Frontend) WriteRaw(b []byte) (int, error) { return f.C.Write(b) }

// AckValue reads the REPLY_ACK of req and returns its u64: 0 is success,
// anything else a refusal (NACK).
func (f *Frontend) AckValue(req uint32, timeout time.Duration) (uint64, error) {
	f.C.SetReadDeadline(time.Now().Add(timeout))
	defer f.C.SetReadDeadline(time.Time{})
	h := make([]byte, 12)
	if _, err := readFull(f.C, h); err != nil {
		return 0, fmt.Errorf("ack of %d: %w", req, err)
	}
	if got := binary.LittleEndian.Uint32(h); got != req {
		return 0, fmt.Errorf("ack of %d answers %d", req, got)
	}
	n := binary.LittleEndian.Uint32(h[8:])
	if n != 8 {
		return 0, fmt.Errorf("ack of %d has a %d-byte payload", req, n)
	}
	p := make([]byte, 8)
	if _, err := readFull(f.C, p); err != nil {
		return 0, fmt.Errorf("ack of %d: %w", req, err)
	}
	return binary.LittleEndian.Uint64(p), nil
}

// SendAck sends req with NEED_REPLY and returns the ack value (see
// AckValue).
func (f *Frontend) SendAck(req uint32, payload []byte, fds ...int) (uint64, error) {
	if err := f.Send(req, FlagVersion|FlagNeedReply, payload, fds...); err != nil {
		return 0, err
	}
	return f.AckValue(req, 5*time.Second)
}

// WaitClosed waits up to timeout for the backend to close the connection
// (EOF or reset, unread data discarded). It reports whether it did, and
// how long that took.
func (f *Frontend) WaitClosed(timeout time.Duration) (bool, time.Duration) {
	start := time.Now()
	f.C.SetReadDeadline(start.Add(timeout))
	defer f.C.SetReadDeadline(time.Time{})
	var b [256]byte
	for {
		_, err := f.C.Read(b[:])
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout()), time.Since(start)
		}
	}
}

// RingState encodes a vhost_vring_state payload.
func RingState(index, num uint32) []byte { return state(index, num) }

// U64 encodes a u64 payload.
func U64(v uint64) []byte { return u64(v) }

// Eventfd returns a new eventfd; blocking unless nonblock.
func Eventfd(nonblock bool) (int, error) {
	flags := unix.EFD_CLOEXEC
	if nonblock {
		flags |= unix.EFD_NONBLOCK
	}
	return unix.Eventfd(0, flags)
}

// Guest is a fake VM on one port: memory in a memfd, receive ring 0 and
// transmit ring 1 of 256 entries, each in its own 16 MiB of that memory.
type Guest struct {
	F      *Frontend
	RX, TX *Ring
	HdrLen int // virtio-net header length: 12 with VERSION_1
	// MemSize is the size of the memfd; memory from 32 MiB up is free for
	// the test's own use (indirect tables, say).
	MemSize int
}

// Guest memory layout used by DialGuest.
const (
	GuestGPA   = 0x40000000
	GuestUAddr = 0x7f1200000000
	RingSize   = 256
)

// DialGuest connects to path and sets up a guest of memSize bytes (at
// least 32 MiB) negotiating features and protocol features (each masked
// by what the backend offers). It returns after the backend has handled
// the rings (a GET_FEATURES round trip).
func DialGuest(path string, memSize int, features, protocol uint64) (*Guest, error) {
	if memSize < 32<<20 {
		memSize = 32 << 20
	}
	f, err := Dial(path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	g := &Guest{F: f, HdrLen: 10, MemSize: memSize}
	fail := func(err error) (*Guest, error) {
		g.Close()
		return nil, err
	}
	if err := f.MapMemory(memSize, GuestGPA, GuestUAddr); err != nil {
		return fail(err)
	}
	feat, err := f.Negotiate(features, protocol)
	if err != nil {
		return fail(fmt.Errorf("negotiate: %w", err))
	}
	if feat&FeatureVersion1 != 0 {
		g.HdrLen = 12
	}
	if err := f.SetMemTable(false); err != nil {
		return fail(fmt.Errorf("SET_MEM_TABLE: %w", err))
	}
	if g.RX, err = f.SetupRing(0, RingSize, 0); err != nil {
		return fail(fmt.Errorf("ring 0: %w", err))
	}
	if g.TX, err = f.SetupRing(1, RingSize, 16<<20); err != nil {
		return fail(fmt.Errorf("ring 1: %w", err))
	}
	if _, err := f.GetU64(GetFeatures); err != nil {
		return fail(fmt.Errorf("barrier after ring setup: %w", err))
	}
	return g, nil
}

// Close closes the connection, the eventfds and the memory.
func (g *Guest) Close() {
	if g.RX != nil {
		g.RX.Close()
		g.RX = nil
	}
	if g.TX != nil {
		g.TX.Close()
		g.TX = nil
	}
	g.F.Close()
}

// PostRX posts n receive buffers of size bytes (header included) and
// kicks the receive ring.
func (g *Guest) PostRX(n, size int) {
	for i := 0; i < n; i++ {
		g.RX.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: size}})
	}
	g.RX.KickNow()
}

// Send transmits frames (each behind a zeroed virtio-net header, as one
// two-descriptor chain) and kicks once. Transmit buffers the backend has
// returned are reclaimed first.
func (g *Guest) Send(frames ...[]byte) {
	g.TX.Driver.CollectUsed()
	for _, fr := range frames {
		g.TX.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, g.HdrLen)}, {Data: fr}})
	}
	g.TX.KickNow()
}

// TXFree returns the transmit ring's reclaimable descriptors to the
// driver and reports how many chains the backend had used.
func (g *Guest) TXFree() int { return len(g.TX.Driver.CollectUsed()) }

// Received returns the frames the backend delivered since the last call,
// without their virtio-net headers.
func (g *Guest) Received() [][]byte {
	var out [][]byte
	for _, u := range g.RX.Driver.CollectUsed() {
		b := g.RX.Driver.Read(g.RX.Driver.DescAddr(u.ID), int(u.Len))
		if len(b) < g.HdrLen {
			out = append(out, nil)
			continue
		}
		out = append(out, append([]byte(nil), b[g.HdrLen:]...))
	}
	return out
}

// Frame builds an Ethernet frame dst <- src with ethertype 0x88b5 (local
// experimental) and n bytes in all, the payload patterned by seq.
func Frame(dst, src [6]byte, seq, n int) []byte {
	if n < 14 {
		n = 14
	}
	f := make([]byte, n)
	copy(f, dst[:])
	copy(f[6:], src[:])
	f[12], f[13] = 0x88, 0xb5
	for i := 14; i < n; i++ {
		f[i] = byte(i*7 + seq*13)
	}
	return f
}

// EnableRing sends SET_VRING_ENABLE for ring index: on enables it, !on
// disables it (as QEMU does for the queue pairs beyond those the driver
// asked for with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
func (f *Frontend) EnableRing(index int, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	return f.Send(SetVringEnable, FlagVersion, state(uint32(index), v))
}
