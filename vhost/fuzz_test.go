package vhost

import (
	"encoding/binary"
	"net"
	"os"
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

// FuzzMessages feeds a byte stream to a connection as a frontend would
// write it and runs every message through validation and the device, the
// way the server loop does. Nothing may panic, and the device must end up
// releasable.
func FuzzMessages(f *testing.F) {
	var setup []byte
	for _, m := range [][]byte{
		msg(GetFeatures, nil),
		msg(GetProtocolFeatures, nil),
		msg(SetProtocolFeatures, le64(OfferedProtocolFeatures)),
		msg(SetOwner, nil),
		msg(SetFeatures, le64(1<<FeatureVersion1|1<<FeatureProtocolFeature)),
		msg(SetVringNum, state(0, 256)),
		msg(SetVringBase, state(0, 0)),
		msg(SetVringAddr, make([]byte, 40)),
		msg(SetVringKick, le64(vringNoFD)),
		msg(SetVringEnable, state(0, 1)),
		msg(GetVringBase, state(0, 0)),
		msg(GetQueueNum, nil),
	} {
		setup = append(setup, m...)
	}
	f.Add(setup)
	f.Add(msg(SetMemTable, make([]byte, 8+32)))
	f.Add(msg(RemMemReg, make([]byte, 40)))
	f.Add(msg(ResetOwner, nil))
	f.Add([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	f.Fuzz(func(t *testing.T, stream []byte) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		wf := os.NewFile(uintptr(fds[1]), "frontend")
		rf := os.NewFile(uintptr(fds[0]), "backend")
		fc, err := net.FileConn(rf)
		rf.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer fc.Close()
		go func() {
			wf.Write(stream)
			wf.Close()
		}()
		c := newConn(fc.(*net.UnixConn))
		d := newDevice(logrus.NewEntry(log), nopBackend{}, Options{})
		defer d.reset()
		for {
			m, err := c.readMessage()
			if err != nil {
				return
			}
			if err := m.Validate(); err != nil {
				closeFDs(m.FDs)
				return
			}
			reply, err := d.handle(m)
			if err != nil {
				return
			}
			if requests[m.Request].replies && reply == nil {
				t.Fatalf("%v: no reply payload", m.Request)
			}
		}
	})
}
