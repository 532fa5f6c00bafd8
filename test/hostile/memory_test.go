package hostile

import (
	"encoding/binary"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

var memFault = regexp.MustCompile(`(?i)guest memory[^\n]*fault|fault[^\n]*guest memory|memory fault`)

// TestTruncatedMemory is case 2: a frontend sets up memory and rings, then
// shrinks its memfd to nothing, so every access vhostd makes to that
// guest's memory faults (SIGBUS). It then gets frames delivered to it and
// kicks its transmit ring. vhostd must survive, drop that connection with
// a log line about a guest memory fault, and keep the other ports working.
func TestTruncatedMemory(t *testing.T) {
	v := startVhostd(t, names("a", "b", "c", "d"))
	defer v.finish(t, "2", "a", "c")
	a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
	b := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
	a.PostRX(64, 2048)
	// A transmit chain, written before the memory goes (afterwards the
	// test's own mapping would fault too); published, not kicked.
	a.TX.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, a.HdrLen)}, {Data: vt.Frame(v.mac("b"), v.mac("a"), 0, 60)}})
	off := len(v.Log())
	if err := unix.Ftruncate(a.F.MemFD, 0); err != nil {
		t.Fatal(err)
	}
	// From here on the test must not touch a's memory (a.Close unmaps
	// without touching it).
	a.TX.KickNow()
	a.RX.KickNow()
	var frames [][]byte
	for i := 0; i < 16; i++ {
		frames = append(frames, vt.Frame(broadcast, v.mac("b"), i, 64))
	}
	b.Send(frames...)

	if closed, d := a.F.WaitClosed(5 * time.Second); !closed {
		t.Errorf("connection of the frontend with truncated memory still open after %v, want it dropped", d.Round(time.Millisecond))
	}
	if err := v.alive(); err != nil {
		t.Fatalf("after the guest memory vanished: %v\n%s", err, tail(v.Log(), 4000))
	}
	if log, ok := v.waitLog(off, 2*time.Second, memFault.MatchString); !ok {
		t.Errorf("log does not mention a guest memory fault (want %v):\n%s", memFault, tail(log, 2000))
	}
	// Two untouched ports still pass traffic.
	if d, err := freshTraffic(t, v, "c", "d"); err != nil {
		t.Errorf("other ports after a's memory vanished: %v", err)
	} else {
		t.Logf("other ports passed traffic in %v", d.Round(time.Millisecond))
	}
}

// TestIndirectTables is case 3: with INDIRECT_DESC negotiated, a transmit
// chain whose indirect table is far longer than the queue (64 MiB, or
// 65,536 entries in 1 MiB, or 65,536 entries chained in a loop). A table
// longer than the queue size is a driver error (virtio 1.2, 2.7.5.3.1:
// "A driver MUST NOT create a descriptor chain longer than the Queue Size
// of the device"); vhostd must mark that queue broken, saying so in
// `ports` (vhost.rings[].broken names the queue size), stay responsive,
// and keep the other ports passing traffic.
func TestIndirectTables(t *testing.T) {
	const (
		bufOff   = 32 << 20 // the frame, in the memory above the rings
		tableOff = 33 << 20
	)
	for _, tc := range []struct {
		name    string
		entries int
		loop    bool
	}{
		{"64MiB table", (64 << 20) / 16, false},
		{"65536-entry table", 65536, false},
		{"looping 65536-entry table", 65536, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := startVhostd(t, names("a", "b", "c"))
			defer v.finish(t, "3-"+strings.ReplaceAll(tc.name, " ", "-"), "a", "b")
			memSize := tableOff + 16*tc.entries + 1<<20
			a := v.guest(t, "a", memSize, stdFeatures, stdProtocol)
			d := a.TX.Driver
			frame := append(make([]byte, a.HdrLen), vt.Frame(broadcast, v.mac("a"), 0, 60)...)
			copy(a.F.Memory[bufOff:], frame)
			table := a.F.GPA + tableOff
			// The table lies outside the driver mock's 16 MiB: write it
			// here.
			put := func(i int, addr uint64, n uint32, flags, next uint16) {
				b := a.F.Memory[tableOff+16*i:]
				binary.LittleEndian.PutUint64(b[0:], addr)
				binary.LittleEndian.PutUint32(b[8:], n)
				binary.LittleEndian.PutUint16(b[12:], flags)
				binary.LittleEndian.PutUint16(b[14:], next)
			}
			if tc.loop {
				for i := 0; i < tc.entries; i++ {
					put(i, a.F.GPA+bufOff, uint32(len(frame)), virtqueue.DescFNext, uint16(i+1))
				}
			} else {
				// A well-formed one-descriptor chain at the start of an
				// otherwise zeroed table.
				put(0, a.F.GPA+bufOff, uint32(len(frame)), 0, 0)
			}
			head := uint16(0) // no chain was posted on this ring yet
			d.WriteDesc(d.GPA+virtqueuetest.DescBase, head, table, uint32(16*tc.entries), virtqueue.DescFIndirect, 0)
			d.Publish(head)
			a.TX.KickNow()

			var broken string
			deadline := time.Now().Add(3 * time.Second)
			for broken == "" && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				ps, err := v.portsErr(2 * time.Second)
				if err != nil {
					t.Fatalf("control socket: %v", err)
				}
				for _, r := range ps["a"].Vhost.Rings {
					if r.Index == 1 {
						broken = r.Broken
					}
				}
			}
			switch {
			case broken == "":
				t.Errorf("transmit ring with a %d-entry indirect table (queue size %d) not marked broken in ports within 3s (used idx %d)",
					tc.entries, vt.RingSize, binary.LittleEndian.Uint16(a.F.Memory[16<<20+virtqueuetest.UsedBase+2:]))
			case !strings.Contains(broken, fmt.Sprint(vt.RingSize)):
				t.Errorf("ring 1 broken with %q, which does not name the queue size %d", broken, vt.RingSize)
			default:
				t.Logf("ring 1 broken: %s", broken)
			}
			if d, err := freshTraffic(t, v, "b", "c"); err != nil {
				t.Errorf("other ports while a's ring is broken: %v", err)
			} else {
				t.Logf("other ports passed traffic in %v", d.Round(time.Millisecond))
			}
		})
	}
}
