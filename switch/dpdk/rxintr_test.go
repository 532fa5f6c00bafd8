//go:build cgo

package dpdk

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdTarget returns what /proc says fd is, e.g. "/dev/net/tun" or
// "anon_inode:[eventpoll]".
func fdTarget(t *testing.T, fd int) string {
	t.Helper()
	s, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRxInterruptFDs records what each driver gives as its rx interrupt
// fd in DPDK 22.11, which decides how the uplink may wait on it: net_tap
// gives the tap queue itself (never to be read) and has nothing to enable;
// devices without rx interrupts give none, and say so without an error in
// the log; without PortConfig.RxInterrupts no device gives one.
func TestRxInterruptFDs(t *testing.T) {
	tap := fmt.Sprintf("iface=vdq%d", os.Getpid())
	p, _ := newVdevConf(t, "net_tap", tap, 2048+Headroom, PortConfig{RxInterrupts: true})
	fd, err := p.RxInterruptFD()
	if err != nil || fdTarget(t, fd) != "/dev/net/tun" {
		t.Fatalf("net_tap: RxInterruptFD = %d, %v, want the tap queue's fd", fd, err)
	}
	rx := p.NewRxQueue()
	defer rx.Close()
	if err := rx.EnableInterrupt(); !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("net_tap: EnableInterrupt = %v, want ENOTSUP (nothing to enable)", err)
	}
	for _, c := range []struct {
		driver, args string
		intr         bool
	}{
		{"net_ring", "", true},
		{"net_null", "", true},
		{"net_af_packet", "iface=lo", true},
		{"net_tap", tap + "n", false},
	} {
		mark := complaintMark()
		p, _ := newVdevConf(t, c.driver, c.args, 2048+Headroom, PortConfig{RxInterrupts: c.intr})
		if fd, err := p.RxInterruptFD(); !errors.Is(err, ErrNoRxInterrupt) {
			t.Errorf("%s (rx interrupts asked: %v): RxInterruptFD = %d, %v, want ErrNoRxInterrupt", c.driver, c.intr, fd, err)
		}
		for _, l := range complaintsSince(mark) {
			if strings.Contains(l, "Rx Intr") {
				t.Errorf("%s: DPDK's complaint %q counted as a complaint, not as benign", c.driver, l)
			}
		}
	}
}

// TestVhostRxInterrupt runs net_vhost's rx interrupt against a real
// frontend, net_virtio_user in this same process: its fd is an epoll fd
// around the frontend's kick eventfd, which nobody drains, so it stays
// readable (level-triggered, it would wake a poller forever) while
// edge-triggered it fires once per kick; the frontend kicks only after
// EnableInterrupt and not after DisableInterrupt, and a frame sent before
// the enable raises nothing (why the uplink polls once after enabling).
func TestVhostRxInterrupt(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sock := fmt.Sprintf("%s/vdq-%d.sock", t.TempDir(), os.Getpid())
	vh, _ := newVdevConf(t, "net_vhost", "iface="+sock, 2048+Headroom, PortConfig{RxInterrupts: true})
	fe, fePool := newVdevConf(t, "net_virtio_user", "path="+sock+",queue_size=256,mac=02:00:00:00:00:0f", 2048+Headroom, PortConfig{})
	fd, err := vh.RxInterruptFD()
	if err != nil || fdTarget(t, fd) != "anon_inode:[eventpoll]" {
		t.Fatalf("net_vhost: RxInterruptFD = %d, %v, want its proxy epoll fd", fd, err)
	}
	rx := vh.NewRxQueue()
	defer rx.Close()
	tx := fe.NewTxQueue(fePool)
	defer tx.Close()
	send := func(seed byte) {
		t.Helper()
		if !tx.Add([][]byte{frameOf(60, seed)}, 60) {
			t.Fatal("Add failed")
		}
		if s, _ := tx.Flush(); s != 1 {
			t.Fatalf("frontend sent %d of 1", s)
		}
	}
	// receive takes the frames the frontend sent; it may take a moment to
	// see them.
	receive := func(want int) {
		t.Helper()
		got := 0
		for i := 0; i < 100 && got < want; i++ {
			got += rx.Receive(MaxBurst)
			rx.Release()
			if got < want {
				time.Sleep(time.Millisecond)
			}
		}
		if got != want {
			t.Fatalf("received %d frames, want %d", got, want)
		}
	}
	epoll := func(events uint32) int {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(ep) })
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
			t.Fatal(err)
		}
		return ep
	}
	fired := func(ep int, timeout int) bool {
		var ev [1]unix.EpollEvent
		for {
			n, err := unix.EpollWait(ep, ev[:], timeout)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			return n > 0
		}
	}
	// Wait until the frontend is attached: frames sent before are lost.
	for i := 0; ; i++ {
		if l, _ := vh.Link(); l.Up {
			break
		}
		if i == 500 {
			t.Fatal("the frontend never attached")
		}
		time.Sleep(2 * time.Millisecond)
	}
	et := epoll(unix.EPOLLIN | unix.EPOLLET)
	fired(et, 0) // forget what the frontend's setup did

	send(1)
	receive(1)
	if fired(et, 20) {
		t.Errorf("the interrupt fired for a frame sent before EnableInterrupt")
	}
	if err := rx.EnableInterrupt(); err != nil {
		t.Fatal(err)
	}
	send(2)
	if !fired(et, 1000) {
		t.Fatal("no interrupt for a frame sent after EnableInterrupt")
	}
	receive(1)
	if fired(et, 20) {
		t.Errorf("edge-triggered fd fired again with no new kick")
	}
	// The kick eventfd inside was never read: level-triggered, the fd is
	// readable still, and would stay so.
	if lt := epoll(unix.EPOLLIN); !fired(lt, 0) || !fired(lt, 0) {
		t.Errorf("level-triggered, the fd is not readable after a kick: the uplink's reasoning for edge-triggering it is stale")
	}
	send(3)
	if !fired(et, 1000) {
		t.Fatal("no interrupt for the second frame")
	}
	receive(1)
	if err := rx.DisableInterrupt(); err != nil {
		t.Fatal(err)
	}
	send(4)
	if fired(et, 20) {
		t.Errorf("the interrupt fired after DisableInterrupt")
	}
	receive(1)
}

// newVdevConf probes a fresh vdev of driver with args, with a pool of
// dataRoom-byte mbufs, configures it with pc (RxDesc, TxDesc and Pool
// filled in when unset) and starts it; all is undone at the test's end.
func newVdevConf(t testing.TB, driver, args string, dataRoom int, pc PortConfig) (*Port, *Mempool) {
	t.Helper()
	devargs := fmt.Sprintf("%s%d", driver, vdevSeq.Add(1))
	if args != "" {
		devargs += "," + args
	}
	pool, err := testEAL.NewPktmbufPool(4095, 64, dataRoom)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Free() })
	p, err := testEAL.Probe(devargs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close %s: %v", devargs, err)
		}
	})
	if pc.RxDesc == 0 {
		pc.RxDesc, pc.TxDesc = 512, 512
	}
	if pc.Pool == nil {
		pc.Pool = pool
	}
	if err := p.Configure(pc); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return p, pool
}

// TestVirtioUserCloseWithRxInterrupts closes net_virtio_user ports that
// have receive interrupts while another goroutine keeps taking the fd
// number of each port's interrupt fd whenever it is free. DPDK 22.11 closes
// that fd (the queue's call eventfd) twice: once in rte_intr_efd_disable
// and once more when virtio_user releases its queues; a number some other
// goroutine took in between (a guest's eventfd, a poller's epoll) would be
// closed under it. Close must leave the number alone once it has let go
// of it. A round in which some other thread of the process (DPDK's own,
// handling the disconnect) took the number first tests nothing and is
// not counted; five rounds must test.
func TestVirtioUserCloseWithRxInterrupts(t *testing.T) {
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(devnull)
	tested := 0
	for round := 0; tested < 5; round++ {
		if round == 15 {
			t.Fatalf("only %d of 15 rounds found the interrupt fd's number free after Close: the test did not test", tested)
		}
		sock := fmt.Sprintf("%s/vdc-%d.sock", t.TempDir(), round)
		newVdevConf(t, "net_vhost", "iface="+sock, 2048+Headroom, PortConfig{})
		p, _ := newVdevConf(t, "net_virtio_user", "path="+sock+",queue_size=256", 2048+Headroom, PortConfig{RxInterrupts: true})
		if p.Driver() != "net_virtio_user" {
			t.Fatalf("driver %q", p.Driver())
		}
		fd, err := p.RxInterruptFD()
		if err != nil || !strings.HasPrefix(fdTarget(t, fd), "anon_inode:[eventfd]") {
			t.Fatalf("net_virtio_user: RxInterruptFD = %d, %v, want its call eventfd", fd, err)
		}
		// held counts the times the goroutine had the number after
		// Close let go of it, stolen the times it lost it while it held it.
		type tally struct{ held, stolen int }
		stop := make(chan struct{})
		done := make(chan tally)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var c tally
			for {
				select {
				case <-stop:
					done <- c
					return
				default:
				}
				n, err := unix.FcntlInt(uintptr(devnull), unix.F_DUPFD_CLOEXEC, fd)
				if err != nil {
					continue
				}
				if n != fd {
					unix.Close(n)
					continue
				}
				c.held++
				time.Sleep(200 * time.Microsecond)
				// Still ours if it still refers to /dev/null.
				var st, want unix.Stat_t
				if unix.Fstat(n, &st) != nil || unix.Fstat(devnull, &want) != nil || st.Rdev != want.Rdev || st.Ino != want.Ino {
					c.stolen++
					continue // not ours to close any more
				}
				unix.Close(n)
			}
		}()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		close(stop)
		c := <-done
		if c.stolen != 0 {
			t.Fatalf("round %d: closing the port closed fd %d after another goroutine had taken it (%d of %d times it held it)", round, fd, c.stolen, c.held)
		}
		if c.held == 0 {
			t.Logf("round %d: fd %d was taken by another thread at once after Close: not counted", round, fd)
			continue
		}
		tested++
	}
}
