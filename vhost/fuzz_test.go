package vhost

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

type nopBackend struct{}

func (nopBackend) Publish(*Rings) {}

func msg(req Request, payload []byte) []byte {
	b := make([]byte, headerSize+len(payload))
	Header{Request: req, Flags: flagVersion, Size: uint32(len(payload))}.encode(b)
	copy(b[headerSize:], payload)
	return b
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func state(i, n uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, i), n)
}

// fdKind values of a fuzz plan: which fd the fake frontend sends.
const (
	fuzzMemfd0       = iota // memfd of 0 bytes
	fuzzMemfd4K             // memfd of one page: smaller than most regions claim
	fuzzMemfd1M             // memfd of 1 MiB
	fuzzMemfd2M             // memfd of 2 MiB
	fuzzEventfd             // non-blocking eventfd
	fuzzPipeRead            // read end of a pipe
	fuzzPipeWrite           // write end of a pipe
	fuzzEventfdBlock        // blocking eventfd: the backend must make it non-blocking
	fuzzMemfdSealed         // memfd of 1 MiB sealed against shrinking (an inflight region)
	fuzzKinds
)

// carriesFDs reports whether the fuzz plan supplies fds for req: every
// request of the spec that may carry fds.
func carriesFDs(req Request) bool {
	switch req {
	case SetMemTable, AddMemReg, RemMemReg, SetVringKick, SetVringCall, SetVringErr,
		SetLogBase, SetLogFD, SetBackendReqFD, SetInflightFD, GPUSetSocket, SetDeviceStateFD:
		return true
	}
	return false
}

// planFDs creates the fds the next plan entry asks for: a count byte (0 to
// 9, more than a message may carry), then one kind byte per fd. It returns
// the rest of the plan.
func planFDs(plan []byte) (fds []int, rest []byte) {
	if len(plan) == 0 {
		return nil, plan
	}
	n := int(plan[0] % (maxFDs + 2))
	plan = plan[1:]
	for ; n > 0 && len(plan) > 0; n-- {
		kind := plan[0] % fuzzKinds
		plan = plan[1:]
		fd := -1
		switch kind {
		case fuzzMemfd0, fuzzMemfd4K, fuzzMemfd1M, fuzzMemfd2M:
			size := [...]int64{0, 4096, 1 << 20, 2 << 20}[kind]
			var err error
			if fd, err = unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC); err == nil {
				unix.Ftruncate(fd, size)
			}
		case fuzzMemfdSealed:
			var err error
			if fd, err = unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING); err == nil {
				unix.Ftruncate(fd, 1<<20)
				unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK)
			}
		case fuzzEventfd:
			fd, _ = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		case fuzzEventfdBlock:
			fd, _ = unix.Eventfd(0, unix.EFD_CLOEXEC)
		case fuzzPipeRead, fuzzPipeWrite:
			var p [2]int
			if unix.Pipe2(p[:], unix.O_CLOEXEC) == nil {
				keep := p[0]
				if kind == fuzzPipeWrite {
					keep = p[1]
				}
				unix.Close(p[0] + p[1] - keep)
				fd = keep
			}
		}
		if fd >= 0 {
			fds = append(fds, fd)
		}
	}
	return fds, plan
}

// fuzzFrontend writes stream to fd message by message, as a frontend
// would, each message with the fds its plan entry asks for (closed here
// once sent: the receiver has its own references). Then it shuts down its
// side for writing.
func fuzzFrontend(fd int, stream, plan []byte) {
	defer unix.Shutdown(fd, unix.SHUT_WR)
	for len(stream) > 0 {
		n := len(stream)
		var fds []int
		if n >= headerSize {
			h := decodeHeader(stream)
			if h.Size <= maxPayload && headerSize+int(h.Size) < n {
				n = headerSize + int(h.Size)
			}
			if carriesFDs(h.Request) {
				fds, plan = planFDs(plan)
			}
		}
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		err := unix.Sendmsg(fd, stream[:n], oob, nil, 0)
		closeFDs(fds)
		if err != nil {
			return // the backend dropped the connection
		}
		stream = stream[n:]
	}
}

// fuzzReplies reads what the backend sends until it closes the connection
// and checks every message is a well-formed reply: vhostd's replies (u64
// values, GET_VRING_BASE's state, acks) are all 8 bytes, but for
// GET_INFLIGHT_FD's (24 bytes and an fd, which reading without a control
// buffer discards).
func fuzzReplies(t testing.TB, fd int) {
	var buf []byte
	var b [4096]byte
	for {
		n, err := unix.Read(fd, b[:])
		if n <= 0 || err != nil {
			if err == unix.EINTR {
				continue
			}
			break
		}
		buf = append(buf, b[:n]...)
		for len(buf) >= headerSize {
			h := decodeHeader(buf)
			want := uint32(8)
			switch h.Request {
			case GetInflightFD:
				want = inflightPayloadSize
			case GetConfig:
				// Empty (an error), or the config header and as many
				// bytes as it says.
				if h.Size == 0 || h.Size > configHeaderSize && h.Size <= configHeaderSize+netConfigSize {
					want = h.Size
				}
			}
			if h.Flags != flagVersion|flagReply || h.Size != want {
				t.Errorf("malformed reply to %v: flags %#x, size %d", h.Request, h.Flags, h.Size)
				return
			}
			if len(buf) < headerSize+int(want) {
				break
			}
			if h.Request == GetConfig && want > 0 {
				if n := binary.LittleEndian.Uint32(buf[headerSize+4:]); n != want-configHeaderSize {
					t.Errorf("GET_CONFIG reply of %d bytes says %d", want-configHeaderSize, n)
					return
				}
			}
			buf = buf[headerSize+int(want):]
		}
	}
	if len(buf) != 0 {
		t.Errorf("%d bytes of a partial reply", len(buf))
	}
}

// FuzzMessages plays a frontend: it sends a byte stream to a connection
// message by message, with fds (memfds of several sizes, eventfds, pipes)
// on the requests that may carry them, chosen by plan, and runs the server
// loop over it. Nothing may panic, every reply must be well-formed, and
// every fd must be closed afterwards, so that millions of runs leak
// nothing.
func FuzzMessages(f *testing.F) {
	var setup []byte
	for _, m := range [][]byte{
		msg(GetFeatures, nil),
		msg(GetProtocolFeatures, nil),
		msg(SetProtocolFeatures, le64(OfferedProtocolFeatures)),
		msg(SetOwner, nil),
		msg(SetFeatures, le64(1<<FeatureVersion1|1<<FeatureProtocolFeature)),
		msg(SetMemTable, memTable(0, 1<<20, 0)),
		msg(SetVringNum, state(0, 256)),
		msg(SetVringBase, state(0, 0)),
		msg(SetVringAddr, vringAddr(0, 0, 0x2000, 0x1000)),
		msg(SetVringKick, le64(0)),
		msg(SetVringCall, le64(0)),
		msg(SetVringEnable, state(0, 1)),
		msg(GetVringBase, state(0, 0)),
		msg(GetQueueNum, nil),
	} {
		setup = append(setup, m...)
	}
	// Plans for the three fd-carrying messages: mem table, kick, call.
	f.Add(setup, []byte{1, fuzzMemfd1M, 1, fuzzEventfd, 1, fuzzEventfdBlock})
	f.Add(setup, []byte{1, fuzzMemfd4K, 1, fuzzEventfd, 1, fuzzEventfd})
	f.Add(setup, []byte{1, fuzzMemfd0})
	f.Add(setup, []byte{1, fuzzMemfd2M, 1, fuzzPipeRead, 1, fuzzPipeWrite})
	f.Add(setup, []byte{9, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M, fuzzMemfd1M})
	var slots []byte
	for _, m := range [][]byte{
		msg(SetProtocolFeatures, le64(OfferedProtocolFeatures)),
		msg(AddMemReg, memReg(0, 1<<20, 0)),
		msg(AddMemReg, memReg(1<<30, 4096, 1<<30)),
		msg(RemMemReg, memReg(0, 1<<20, 0)),
		msg(ResetOwner, nil),
	} {
		slots = append(slots, m...)
	}
	f.Add(slots, []byte{1, fuzzMemfd1M, 1, fuzzMemfd4K, 1, fuzzEventfd})
	// Inflight tracking: a region asked for, then one handed over (for 2
	// queues of 256) before the transmit ring starts, then a bad one.
	inflight := func(size, off uint64, n, qs uint16) []byte {
		b := binary.LittleEndian.AppendUint64(nil, size)
		b = binary.LittleEndian.AppendUint64(b, off)
		b = binary.LittleEndian.AppendUint16(b, n)
		b = binary.LittleEndian.AppendUint16(b, qs)
		return append(b, 0, 0, 0, 0)
	}
	var infl []byte
	for _, m := range [][]byte{
		msg(SetProtocolFeatures, le64(OfferedProtocolFeatures)),
		msg(SetFeatures, le64(1<<FeatureVersion1|1<<FeatureProtocolFeature)),
		msg(GetInflightFD, inflight(0, 0, 2, 256)),
		msg(SetMemTable, memTable(0, 1<<20, 0)),
		msg(SetInflightFD, inflight(8320, 0, 2, 256)),
		msg(SetVringNum, state(1, 256)),
		msg(SetVringBase, state(1, 0)),
		msg(SetVringAddr, vringAddr(1, 0, 0x2000, 0x1000)),
		msg(SetVringKick, le64(1)),
		msg(SetVringEnable, state(1, 1)),
		msg(GetVringBase, state(1, 0)),
		msg(SetInflightFD, inflight(1<<40, 4096, 9, 3)),
	} {
		infl = append(infl, m...)
	}
	f.Add(infl, []byte{1, fuzzMemfd1M, 1, fuzzMemfdSealed, 1, fuzzEventfd, 1, fuzzMemfdSealed})
	// Status, MTU, config space and RARP, good and bad: a config read
	// out of range, one whose offset+size wraps, a write with the
	// migration flag.
	cfg := func(off, size, flags uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, off)
		b = binary.LittleEndian.AppendUint32(b, size)
		b = binary.LittleEndian.AppendUint32(b, flags)
		return append(b, make([]byte, size)...)
	}
	var netdev []byte
	for _, m := range [][]byte{
		msg(SetProtocolFeatures, le64(OfferedProtocolFeatures)),
		msg(SetFeatures, le64(1<<FeatureVersion1|1<<FeatureProtocolFeature|1<<FeatureNetMTU)),
		msg(SetStatus, le64(StatusFeaturesOK)),
		msg(GetStatus, nil),
		msg(NetSetMTU, le64(1400)),
		msg(NetSetMTU, le64(70000)),
		msg(GetConfig, cfg(0, 24, 0)),
		msg(GetConfig, cfg(20, 8, 0)),
		msg(GetConfig, cfg(0xfffffffc, 8, 0)),
		msg(SetConfig, cfg(0, 6, configFlagMigration)),
		msg(SetConfig, cfg(10, 2, 0)),
		msg(SendRARP, le64(0x0302010054520000>>16)),
		msg(ResetDevice, nil),
		msg(SetStatus, le64(0)),
	} {
		netdev = append(netdev, m...)
	}
	f.Add(netdev, []byte{})
	needReply := msg(SetLogBase, make([]byte, 16))
	needReply[4] |= flagNeedReply
	f.Add(needReply, []byte{1, fuzzMemfd4K})
	f.Add(msg(RemMemReg, make([]byte, 40)), []byte{})
	f.Add([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, []byte{})

	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	entry := logrus.NewEntry(log)
	// The runtime's network poller opens its fds on first use: use it once
	// before the first count.
	fuzzConn(f, entry, nil, nil)
	f.Fuzz(func(t *testing.T, stream, plan []byte) {
		before := countFDs(t)
		fuzzConn(t, entry, stream, plan)
		if after := countFDs(t); after != before {
			t.Fatalf("%d fds open after the connection, %d before: leaked", after, before)
		}
	})
}

// fuzzConn runs one connection: the server loop on one end of a socket
// pair, a fake frontend sending stream and plan on the other.
func fuzzConn(t testing.TB, log *logrus.Entry, stream, plan []byte) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	front := fds[1]
	rf := os.NewFile(uintptr(fds[0]), "backend")
	fc, err := net.FileConn(rf)
	rf.Close()
	if err != nil {
		unix.Close(front)
		t.Fatal(err)
	}
	defer unix.Close(front)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		fuzzFrontend(front, stream, plan)
	}()
	go func() {
		defer wg.Done()
		fuzzReplies(t, front)
	}()
	s := &Server{path: "fuzz", log: log, done: make(chan struct{})}
	d := newDevice(log, nopBackend{}, Options{})
	err = s.loop(newConn(fc.(*net.UnixConn)), d)
	d.reset()
	// As Server.serve does: the last status closes the kick fds that
	// watched disabled rings.
	s.setStatus(d, false, "")
	fc.Close()
	wg.Wait()
	return err
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func memRegion(gpa, size, uaddr uint64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, gpa)
	b = binary.LittleEndian.AppendUint64(b, size)
	b = binary.LittleEndian.AppendUint64(b, uaddr)
	return binary.LittleEndian.AppendUint64(b, 0)
}

func memTable(gpa, size, uaddr uint64) []byte {
	return append(binary.LittleEndian.AppendUint32(make([]byte, 0, 40), 1), append(make([]byte, 4), memRegion(gpa, size, uaddr)...)...)
}

func memReg(gpa, size, uaddr uint64) []byte {
	return append(make([]byte, 8), memRegion(gpa, size, uaddr)...)
}

func vringAddr(index uint32, desc, used, avail uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint64(b, desc)
	b = binary.LittleEndian.AppendUint64(b, used)
	b = binary.LittleEndian.AppendUint64(b, avail)
	return binary.LittleEndian.AppendUint64(b, 0)
}
