// Package vhosttest is a fake vhost-user frontend: it connects to a
// backend's socket and speaks the protocol the way QEMU does, with guest
// memory in a memfd and rings laid out by a driver-side mock. Tests of the
// backend use it where a real QEMU would be too slow or too polite.
package vhosttest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// Request codes, as on the wire.
const (
	GetFeatures         = 1
	SetFeatures         = 2
	SetOwner            = 3
	ResetOwner          = 4
	SetMemTable         = 5
	SetVringNum         = 8
	SetVringAddr        = 9
	SetVringBase        = 10
	GetVringBase        = 11
	SetVringKick        = 12
	SetVringCall        = 13
	SetVringErr         = 14
	GetProtocolFeatures = 15
	SetProtocolFeatures = 16
	GetQueueNum         = 17
	SetVringEnable      = 18
	ResetDevice         = 34
	GetMaxMemSlots      = 36
	AddMemReg           = 37
	RemMemReg           = 38

	FlagVersion   = 0x1
	FlagReply     = 0x4
	FlagNeedReply = 0x8
)

// Frontend is one connection to a backend.
type Frontend struct {
	C *net.UnixConn
	// Memory is the guest memory, a memfd mapped here.
	Memory []byte
	MemFD  int
	GPA    uint64 // guest-physical address of Memory[0]
	UAddr  uint64 // the "frontend virtual address" announced for Memory[0]
	// PollingKick makes SetupRing send SET_VRING_KICK with the no-fd flag:
	// the backend must poll the ring instead of waiting for kicks.
	PollingKick bool
	// NoEnable makes SetupRing leave the ring disabled (no
	// SET_VRING_ENABLE), as QEMU does until the driver sets DRIVER_OK;
	// EnableRing enables it.
	NoEnable bool
}

// Dial connects to a backend socket, retrying until timeout while it does
// not exist yet.
func Dial(path string, timeout time.Duration) (*Frontend, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return &Frontend{C: c, MemFD: -1}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dial %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close closes the connection and unmaps the memory.
func (f *Frontend) Close() {
	f.C.Close()
	if f.Memory != nil {
		unix.Munmap(f.Memory)
		f.Memory = nil
	}
	if f.MemFD >= 0 {
		unix.Close(f.MemFD)
		f.MemFD = -1
	}
}

// Send sends a raw message: header fields, payload and fds as given.
func (f *Frontend) Send(req, flags uint32, payload []byte, fds ...int) error {
	return f.SendSized(req, flags, uint32(len(payload)), payload, fds...)
}

// SendSized is Send with a header size field that may lie about the payload.
func (f *Frontend) SendSized(req, flags, size uint32, payload []byte, fds ...int) error {
	b := make([]byte, 12+len(payload))
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flags)
	binary.LittleEndian.PutUint32(b[8:], size)
	copy(b[12:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := f.C.WriteMsgUnix(b, oob, nil)
	return err
}

// Reply reads one reply and checks it answers req.
func (f *Frontend) Reply(req uint32) ([]byte, error) {
	f.C.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer f.C.SetReadDeadline(time.Time{})
	h := make([]byte, 12)
	if _, err := readFull(f.C, h); err != nil {
		return nil, fmt.Errorf("reply to %d: %w", req, err)
	}
	if got := binary.LittleEndian.Uint32(h); got != req {
		return nil, fmt.Errorf("reply to %d answers %d", req, got)
	}
	if fl := binary.LittleEndian.Uint32(h[4:]); fl&FlagReply == 0 {
		return nil, fmt.Errorf("reply to %d lacks the reply flag (flags %#x)", req, fl)
	}
	p := make([]byte, binary.LittleEndian.Uint32(h[8:]))
	if _, err := readFull(f.C, p); err != nil {
		return nil, err
	}
	return p, nil
}

func readFull(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Closed reports whether the backend closed the connection (reading gives
// EOF within a second).
func (f *Frontend) Closed() bool {
	f.C.SetReadDeadline(time.Now().Add(time.Second))
	defer f.C.SetReadDeadline(time.Time{})
	var b [64]byte
	for {
		_, err := f.C.Read(b[:])
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b
}

func state(index, num uint32) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, index)
	binary.LittleEndian.PutUint32(b[4:], num)
	return b
}

// GetU64 sends a GET request that replies with a u64.
func (f *Frontend) GetU64(req uint32) (uint64, error) {
	if err := f.Send(req, FlagVersion, nil); err != nil {
		return 0, err
	}
	p, err := f.Reply(req)
	if err != nil {
		return 0, err
	}
	if len(p) != 8 {
		return 0, fmt.Errorf("reply to %d has %d bytes", req, len(p))
	}
	return binary.LittleEndian.Uint64(p), nil
}

// SetU64 sends a request carrying a u64; with ack it asks for and checks a
// REPLY_ACK.
func (f *Frontend) SetU64(req uint32, v uint64, ack bool) error {
	flags := uint32(FlagVersion)
	if ack {
		flags |= FlagNeedReply
	}
	if err := f.Send(req, flags, u64(v)); err != nil {
		return err
	}
	if ack {
		return f.Ack(req)
	}
	return nil
}

// Ack reads the REPLY_ACK of a request sent with FlagNeedReply and returns
// an error if the backend refused it.
func (f *Frontend) Ack(req uint32) error {
	p, err := f.Reply(req)
	if err != nil {
		return err
	}
	if len(p) != 8 || binary.LittleEndian.Uint64(p) != 0 {
		return fmt.Errorf("request %d refused (ack %x)", req, p)
	}
	return nil
}

// MapMemory creates size bytes of guest memory in a memfd at guest-physical
// address gpa, announced at frontend address uaddr.
func (f *Frontend) MapMemory(size int, gpa, uaddr uint64) error {
	fd, err := unix.MemfdCreate("vhosttest-guest", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return err
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return err
	}
	f.Memory, f.MemFD, f.GPA, f.UAddr = m, fd, gpa, uaddr
	return nil
}

// Region is a SET_MEM_TABLE region.
type Region struct{ GPA, Size, UAddr, Offset uint64 }

// MemTablePayload encodes SET_MEM_TABLE regions.
func MemTablePayload(rs ...Region) []byte {
	b := make([]byte, 8+32*len(rs))
	binary.LittleEndian.PutUint32(b, uint32(len(rs)))
	for i, r := range rs {
		o := 8 + 32*i
		binary.LittleEndian.PutUint64(b[o:], r.GPA)
		binary.LittleEndian.PutUint64(b[o+8:], r.Size)
		binary.LittleEndian.PutUint64(b[o+16:], r.UAddr)
		binary.LittleEndian.PutUint64(b[o+24:], r.Offset)
	}
	return b
}

// MemRegPayload encodes the payload of ADD_MEM_REG and REM_MEM_REG.
// Its layout is SET_MEM_TABLE's with one region and zero padding in
// place of the count.
func MemRegPayload(r Region) []byte {
	b := MemTablePayload(r)
	clear(b[:8])
	return b
}

// SetMemTable announces the whole memfd as one region.
func (f *Frontend) SetMemTable(ack bool) error {
	flags := uint32(FlagVersion)
	if ack {
		flags |= FlagNeedReply
	}
	p := MemTablePayload(Region{GPA: f.GPA, Size: uint64(len(f.Memory)), UAddr: f.UAddr})
	if err := f.Send(SetMemTable, flags, p, f.MemFD); err != nil {
		return err
	}
	if ack {
		return f.Ack(SetMemTable)
	}
	return nil
}

// Ring is one ring the frontend set up: the driver mock laying out its
// descriptors, and the kick and call eventfds.
type Ring struct {
	Index  int
	Driver *virtqueuetest.Driver
	Kick   int
	Call   int
}

// KickNow notifies the backend (nothing in polling mode).
func (r *Ring) KickNow() {
	if r.Kick >= 0 {
		unix.Write(r.Kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// closeFD closes *fd unless it is already closed (-1), and marks it so: a
// number closed twice may by then be another goroutine's fd.
func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// Close releases the eventfds; a second call does nothing.
func (r *Ring) Close() {
	closeFD(&r.Kick)
	closeFD(&r.Call)
}

// SetupRing lays out ring index in the region of memory starting at off
// (each ring needs its own 16 MiB: see virtqueuetest's layout), and sends
// NUM, BASE, ADDR, KICK, CALL and ENABLE as QEMU does.
func (f *Frontend) SetupRing(index int, size uint16, off uint64) (*Ring, error) {
	d := virtqueuetest.NewOn(f.Memory[off:off+16<<20], size, f.GPA+off)
	r := &Ring{Index: index, Driver: d, Kick: -1, Call: -1}
	var err error
	if !f.PollingKick {
		if r.Kick, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			return nil, err
		}
	}
	if r.Call, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, err
	}
	addr := f.AddrPayload(r)
	steps := []func() error{
		func() error { return f.Send(SetVringNum, FlagVersion, state(uint32(index), uint32(size))) },
		func() error { return f.Send(SetVringBase, FlagVersion, state(uint32(index), 0)) },
		func() error { return f.Send(SetVringAddr, FlagVersion, addr) },
		func() error {
			if f.PollingKick {
				return f.Send(SetVringKick, FlagVersion, u64(uint64(index)|0x100))
			}
			return f.Send(SetVringKick, FlagVersion, u64(uint64(index)), r.Kick)
		},
		func() error { return f.Send(SetVringCall, FlagVersion, u64(uint64(index)), r.Call) },
	}
	if !f.NoEnable {
		steps = append(steps, func() error { return f.Send(SetVringEnable, FlagVersion, state(uint32(index), 1)) })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// AddrPayload encodes SET_VRING_ADDR for r: its parts as frontend
// addresses of f's memory.
func (f *Frontend) AddrPayload(r *Ring) []byte {
	cfg := r.Driver.Config()
	toU := func(gpa uint64) uint64 { return gpa - f.GPA + f.UAddr }
	addr := make([]byte, 40)
	binary.LittleEndian.PutUint32(addr, uint32(r.Index))
	binary.LittleEndian.PutUint64(addr[8:], toU(cfg.Desc))
	binary.LittleEndian.PutUint64(addr[16:], toU(cfg.Used))
	binary.LittleEndian.PutUint64(addr[24:], toU(cfg.Avail))
	return addr
}

// GetVringBase stops ring index and returns the backend's next avail index.
func (f *Frontend) GetVringBase(index int) (uint32, error) {
	if err := f.Send(GetVringBase, FlagVersion, state(uint32(index), 0)); err != nil {
		return 0, err
	}
	p, err := f.Reply(GetVringBase)
	if err != nil {
		return 0, err
	}
	if len(p) != 8 || binary.LittleEndian.Uint32(p) != uint32(index) {
		return 0, fmt.Errorf("GET_VRING_BASE reply %x", p)
	}
	return binary.LittleEndian.Uint32(p[4:]), nil
}

// Negotiate does what QEMU does first: GET_FEATURES, GET/SET protocol
// features, SET_OWNER, SET_FEATURES with want & offered. It returns the
// features set.
func (f *Frontend) Negotiate(want, wantProtocol uint64) (uint64, error) {
	offered, err := f.GetU64(GetFeatures)
	if err != nil {
		return 0, err
	}
	if offered&(1<<30) != 0 {
		po, err := f.GetU64(GetProtocolFeatures)
		if err != nil {
			return 0, err
		}
		if err := f.SetU64(SetProtocolFeatures, po&wantProtocol, false); err != nil {
			return 0, err
		}
	}
	if err := f.Send(SetOwner, FlagVersion, nil); err != nil {
		return 0, err
	}
	feat := offered & want
	return feat, f.SetU64(SetFeatures, feat, false)
}

// Inflight is the payload of GET_INFLIGHT_FD and SET_INFLIGHT_FD.
type Inflight struct {
	MmapSize, MmapOffset uint64
	NumQueues, QueueSize uint16
}

// Request codes of inflight tracking.
const (
	GetInflightFD = 31
	SetInflightFD = 32
)

func (i Inflight) payload() []byte {
	b := make([]byte, 24)
	binary.LittleEndian.PutUint64(b, i.MmapSize)
	binary.LittleEndian.PutUint64(b[8:], i.MmapOffset)
	binary.LittleEndian.PutUint16(b[16:], i.NumQueues)
	binary.LittleEndian.PutUint16(b[18:], i.QueueSize)
	return b
}

// GetInflightFD asks the backend for an inflight region for numQueues
// queues of queueSize and returns its reply and fd.
func (f *Frontend) GetInflightFD(numQueues, queueSize uint16) (Inflight, int, error) {
	if err := f.Send(GetInflightFD, FlagVersion, Inflight{NumQueues: numQueues, QueueSize: queueSize}.payload()); err != nil {
		return Inflight{}, -1, err
	}
	f.C.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer f.C.SetReadDeadline(time.Time{})
	b := make([]byte, 12+24)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := f.C.ReadMsgUnix(b, oob)
	if err != nil {
		return Inflight{}, -1, fmt.Errorf("GET_INFLIGHT_FD reply: %w", err)
	}
	fd := -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for i := range msgs {
			if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				for _, x := range fds {
					if fd < 0 {
						fd = x
					} else {
						unix.Close(x)
					}
				}
			}
		}
	}
	if n != len(b) || binary.LittleEndian.Uint32(b) != GetInflightFD || binary.LittleEndian.Uint32(b[8:]) != 24 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return Inflight{}, -1, fmt.Errorf("GET_INFLIGHT_FD reply of %d bytes: %x", n, b[:n])
	}
	if fd < 0 {
		return Inflight{}, -1, fmt.Errorf("GET_INFLIGHT_FD reply carries no fd")
	}
	p := b[12:]
	return Inflight{
		MmapSize:   binary.LittleEndian.Uint64(p),
		MmapOffset: binary.LittleEndian.Uint64(p[8:]),
		NumQueues:  binary.LittleEndian.Uint16(p[16:]),
		QueueSize:  binary.LittleEndian.Uint16(p[18:]),
	}, fd, nil
}

// SetInflightFD hands the backend an inflight region; with ack it asks
// for and checks a REPLY_ACK.
func (f *Frontend) SetInflightFD(in Inflight, fd int, ack bool) error {
	flags := uint32(FlagVersion)
	if ack {
		flags |= FlagNeedReply
	}
	if err := f.Send(SetInflightFD, flags, in.payload(), fd); err != nil {
		return err
	}
	if ack {
		return f.Ack(SetInflightFD)
	}
	return nil
}

// ResumeRing sets up r again on this connection as a frontend does after
// a backend reconnects: the same ring layout and driver state, the given
// base, r's kick and call eventfds.
func (f *Frontend) ResumeRing(r *Ring, base uint16) error {
	index := uint32(r.Index)
	steps := []func() error{
		func() error { return f.Send(SetVringNum, FlagVersion, state(index, uint32(r.Driver.Size))) },
		func() error { return f.Send(SetVringBase, FlagVersion, state(index, uint32(base))) },
		func() error { return f.Send(SetVringAddr, FlagVersion, f.AddrPayload(r)) },
		func() error { return f.Send(SetVringKick, FlagVersion, u64(uint64(index)), r.Kick) },
		func() error { return f.Send(SetVringCall, FlagVersion, u64(uint64(index)), r.Call) },
		func() error { return f.Send(SetVringEnable, FlagVersion, state(index, 1)) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// WaitReadable waits up to timeout for fd to be readable (an eventfd
// signalled). poll is retried when a signal interrupts it: the Go
// runtime's preemption signal does so at any time.
func WaitReadable(fd int, timeout time.Duration) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(pfd, int(max(time.Until(deadline), 0).Milliseconds()))
		switch {
		case n == 1:
			return nil
		case err == unix.EINTR && time.Now().Before(deadline):
			continue
		case err != nil:
			return fmt.Errorf("poll fd %d: %w", fd, err)
		}
		return fmt.Errorf("fd %d not readable within %v", fd, timeout)
	}
}

// PackedRing is one packed ring the frontend set up (after acking
// VIRTIO_F_RING_PACKED): the packed driver mock and the eventfds.
type PackedRing struct {
	Index  int
	Driver *virtqueuetest.PackedDriver
	Kick   int
	Call   int
}

// KickNow notifies the backend (nothing in polling mode).
func (r *PackedRing) KickNow() {
	if r.Kick >= 0 {
		unix.Write(r.Kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// Close releases the eventfds; a second call does nothing.
func (r *PackedRing) Close() {
	closeFD(&r.Kick)
	closeFD(&r.Call)
}

// SetupPackedRing lays out packed ring index of size descriptors in the
// 16 MiB of memory at off and sends NUM, BASE (base, see
// virtqueue.PackedBase), ADDR, KICK, CALL and ENABLE as QEMU does. The
// driver starts at slot 0 in wrap 1: a base elsewhere needs the driver
// moved with Driver.Skip before any chain is added.
func (f *Frontend) SetupPackedRing(index int, size uint16, off uint64, base uint32) (*PackedRing, error) {
	d := virtqueuetest.NewPackedOn(f.Memory[off:off+16<<20], size, f.GPA+off)
	r := &PackedRing{Index: index, Driver: d, Kick: -1, Call: -1}
	var err error
	if r.Kick, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, err
	}
	if r.Call, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		unix.Close(r.Kick)
		return nil, err
	}
	if err := f.ResumePackedRing(r, base); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// ResumePackedRing sends NUM, BASE, ADDR, KICK, CALL and ENABLE for r
// with the given base.
func (f *Frontend) ResumePackedRing(r *PackedRing, base uint32) error {
	index := uint32(r.Index)
	steps := []func() error{
		func() error { return f.Send(SetVringNum, FlagVersion, state(index, uint32(r.Driver.Size))) },
		func() error { return f.Send(SetVringBase, FlagVersion, state(index, base)) },
		func() error { return f.Send(SetVringAddr, FlagVersion, f.PackedAddrPayload(r)) },
		func() error { return f.Send(SetVringKick, FlagVersion, u64(uint64(index)), r.Kick) },
		func() error { return f.Send(SetVringCall, FlagVersion, u64(uint64(index)), r.Call) },
		func() error { return f.Send(SetVringEnable, FlagVersion, state(index, 1)) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// PackedAddrPayload encodes SET_VRING_ADDR for packed ring r: the
// descriptor ring in desc_user_addr, the device area in used_user_addr
// and the driver area in avail_user_addr, as QEMU sends them.
func (f *Frontend) PackedAddrPayload(r *PackedRing) []byte {
	cfg := r.Driver.Config()
	toU := func(gpa uint64) uint64 { return gpa - f.GPA + f.UAddr }
	addr := make([]byte, 40)
	binary.LittleEndian.PutUint32(addr, uint32(r.Index))
	binary.LittleEndian.PutUint64(addr[8:], toU(cfg.Desc))
	binary.LittleEndian.PutUint64(addr[16:], toU(cfg.Device))
	binary.LittleEndian.PutUint64(addr[24:], toU(cfg.Driver))
	return addr
}
