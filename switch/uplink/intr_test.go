//go:build cgo

package uplink

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/switchtest"
)

// testEtherType marks the frames the tests send from the kernel side, to
// tell them from what the kernel sends by itself on a new interface (IPv6
// router solicitations, MLD reports).
const testEtherType = 0x88b5 // IEEE local experimental

// kernelFrame is broadcast frame number seq from 02:00:00:00:00:99: it
// floods from the uplink to every port.
func kernelFrame(seq, size int) []byte {
	f := make([]byte, size)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x99})
	binary.BigEndian.PutUint16(f[12:], testEtherType)
	binary.BigEndian.PutUint32(f[14:], uint32(seq))
	for i := 18; i < size; i++ {
		f[i] = byte(seq + i)
	}
	return f
}

// kernelSender sends frames out of a kernel interface, as a host on the
// link would: through a tap, to the DPDK device that holds it; through a
// veth, to its peer.
type kernelSender struct {
	fd int
	to unix.SockaddrLinklayer
}

func newKernelSender(t *testing.T, iface string) *kernelSender {
	t.Helper()
	l, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	// Protocol 0: the socket only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &kernelSender{fd: fd, to: unix.SockaddrLinklayer{Ifindex: l.Attrs().Index}}
}

func (k *kernelSender) send(t *testing.T, f []byte) {
	t.Helper()
	if err := unix.Sendto(k.fd, f, 0, &k.to); err != nil {
		t.Fatalf("send from the kernel side: %v", err)
	}
}

// testFrames reads what reaches port out and returns the test's frames
// among it (by their sequence numbers), until want arrived or timeout.
func testFrames(t *testing.T, out <-chan []byte, want int, timeout time.Duration) map[int][]byte {
	t.Helper()
	got := map[int][]byte{}
	deadline := time.After(timeout)
	for len(got) < want {
		select {
		case f := <-out:
			if len(f) >= 18 && binary.BigEndian.Uint16(f[12:]) == testEtherType {
				seq := int(binary.BigEndian.Uint32(f[14:]))
				if _, dup := got[seq]; dup {
					t.Errorf("frame %d arrived twice", seq)
				}
				got[seq] = f
			}
		case <-deadline:
			return got
		}
	}
	return got
}

var ifSeq int

// ifName returns an interface name unique to this process and call.
func ifName(prefix string) string {
	ifSeq++
	return fmt.Sprintf("%s%d%c", prefix, os.Getpid(), 'a'+ifSeq%26)
}

// openUplink opens an uplink on devargs, closed at the end of the test.
func openUplink(t testing.TB, cfg Config) *Port {
	t.Helper()
	p, err := Open(testEAL, cfg, testLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

// switchWith runs a switch of the uplink and one VM port (a channel
// port), with pollers pollers, and returns the VM port.
func switchWith(t *testing.T, up *Port, pollers int) *switchtest.ChanPort {
	t.Helper()
	s, err := vswitch.New(vswitch.Config{Pollers: pollers}, testLog)
	if err != nil {
		t.Fatal(err)
	}
	vm := switchtest.NewChanPort("vm", 512)
	t.Cleanup(func() {
		s.Close()
		vm.Close()
	})
	if _, err := s.AddPort(up); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPort(vm); err != nil {
		t.Fatal(err)
	}
	s.Start()
	return vm
}

// firstFrameLatencies sends n frames one at a time, each after the switch
// has had time to go to sleep, and returns how long each took to reach the
// VM port, sorted.
func firstFrameLatencies(t *testing.T, send func(seq int), vm *switchtest.ChanPort, first, n int) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(20 * time.Millisecond) // idle spin is 50µs: asleep by now
		start := time.Now()
		send(first + i)
		if got := testFrames(t, vm.Out, 1, 3*time.Second); len(got) != 1 {
			t.Fatalf("frame %d sent after idle never arrived", first+i)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat
}

// idleCPU returns the CPU time this process uses over d, with the
// switch idle: a poller woken again and again by an fd that stays readable
// would use about all of d.
func idleCPU(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	time.Sleep(20 * time.Millisecond)
	before := cpu()
	time.Sleep(d)
	return cpu() - before
}

// TestTapInterrupts runs a net_tap uplink in a switch: the uplink waits
// on the tap queue's fd (its rx interrupt fd), frames sent into the tap
// interface from the kernel wake the sleeping poller, and none is lost:
// the poller must never read that fd, where a read takes a frame.
func TestTapInterrupts(t *testing.T) {
	iface := ifName("vdu")
	// The safety-net look every 10s (the poller caps it at 1s): a frame
	// found by looking would arrive 500ms late on average.
	up := openUplink(t, Config{Devargs: "net_tap0,iface=" + iface, IntrIdlePoll: 10 * time.Second})
	st := up.Status()
	if st.RxMode != RxInterrupts || st.RxMode.String() != "interrupts" {
		t.Fatalf("net_tap uplink RxMode %v, want interrupts", st.RxMode)
	}
	fds := up.WaitFDs(nil)
	if len(fds) != 1 || !up.NoDrain(fds[0]) || up.NoDrain(fds[0]+1000) {
		t.Fatalf("WaitFDs %v: want the one rx interrupt fd, marked NoDrain", fds)
	}
	if s, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fds[0])); s != "/dev/net/tun" {
		t.Fatalf("rx interrupt fd is %q, want the tap queue", s)
	}
	k := newKernelSender(t, iface)
	vm := switchWith(t, up, 1)

	// Woken by the fd: the first frame after idle arrives at once.
	lat := firstFrameLatencies(t, func(seq int) { k.send(t, kernelFrame(seq, 60)) }, vm, 0, 15)
	t.Logf("first frame after idle, tap -> VM port: min %v median %v max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 250*time.Millisecond {
		t.Errorf("median latency %v after idle: the poller was not woken by the tap's fd", lat[len(lat)/2])
	}

	// Bursts and singles, sent while the poller sleeps, spins or works:
	// every frame arrives, whole and once.
	const n = 300
	want := map[int][]byte{}
	for i := 0; i < n; i++ {
		seq := 1000 + i
		f := kernelFrame(seq, 60+i*5%1400)
		want[seq] = f
		k.send(t, f)
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	got := testFrames(t, vm.Out, n, 5*time.Second)
	for seq, f := range want {
		if g, ok := got[seq]; !ok {
			t.Errorf("frame %d lost", seq)
		} else if !bytes.Equal(g, f) {
			t.Errorf("frame %d changed on the way", seq)
		}
	}
	if dev, _, err := up.DeviceStats(); err != nil || dev.RxErrors != 0 || dev.RxMissed != 0 {
		t.Errorf("device stats %+v, %v", dev, err)
	}
	if used := idleCPU(t, 300*time.Millisecond); used > 100*time.Millisecond {
		t.Errorf("idle switch with a tap uplink used %v of CPU in 300ms", used)
	}
}

// epollSetsWatching returns, for every epoll set of this process that
// watches fd, its fdinfo line for fd ("tfd: N events: E data: D ...").
func epollSetsWatching(t *testing.T, fd int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "tfd:" && f[1] == strconv.Itoa(fd) {
				out = append(out, line)
			}
		}
	}
	return out
}

// TestInterruptFDOwnedByOnePoller checks that with two pollers only the
// one that owns the uplink sleeps on its rx interrupt fd, and that it
// watches it edge-triggered and marked not to be read.
func TestInterruptFDOwnedByOnePoller(t *testing.T) {
	iface := ifName("vdu")
	up := openUplink(t, Config{Devargs: "net_tap0,iface=" + iface, Pollers: 2})
	fd := up.WaitFDs(nil)[0]
	k := newKernelSender(t, iface)
	vm := switchWith(t, up, 2)
	var sets []string
	for i := 0; i < 100; i++ { // the pollers build their sets as they start
		if sets = epollSetsWatching(t, fd); len(sets) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(sets) != 1 {
		t.Fatalf("%d epoll sets watch the uplink's fd, want 1 (its poller's): %q", len(sets), sets)
	}
	f := strings.Fields(sets[0]) // tfd: N events: E data: D
	ev, err1 := strconv.ParseUint(f[3], 16, 32)
	data, err2 := strconv.ParseUint(f[5], 16, 64)
	if err1 != nil || err2 != nil || ev&unix.EPOLLET == 0 || data>>32 != 1 || int(uint32(data)) != fd {
		t.Errorf("fd watched as %q: want EPOLLET and the no-drain mark (data 1<<32|fd)", sets[0])
	}
	k.send(t, kernelFrame(7, 100))
	if got := testFrames(t, vm.Out, 1, 3*time.Second); len(got) != 1 {
		t.Fatal("frame not forwarded with two pollers")
	}
}

// TestAfPacketFallsBackToPolling runs a net_af_packet uplink on a veth,
// which has no rx interrupts: the uplink is set up again without them,
// polls, and forwards frames the kernel sends from the veth's peer.
func TestAfPacketFallsBackToPolling(t *testing.T) {
	a, b := ifName("vdv"), ifName("vdv")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	k := newKernelSender(t, b)
	if l, err := netlink.LinkByName(a); err != nil || netlink.LinkSetUp(l) != nil {
		t.Fatalf("veth %s: %v", a, err)
	}
	up := openUplink(t, Config{Devargs: "net_af_packet0,iface=" + a})
	if st := up.Status(); st.RxMode != RxPolling || st.RxMode.String() != "polling" {
		t.Fatalf("af_packet uplink RxMode %v, want polling", st.RxMode)
	}
	if fds := up.WaitFDs(nil); len(fds) != 0 || up.IdlePoll() != time.Millisecond {
		t.Fatalf("polling uplink: WaitFDs %v, IdlePoll %v", fds, up.IdlePoll())
	}
	vm := switchWith(t, up, 1)
	lat := firstFrameLatencies(t, func(seq int) { k.send(t, kernelFrame(seq, 60)) }, vm, 0, 5)
	t.Logf("first frame after idle, veth -> af_packet -> VM port (polled): min %v median %v max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	for i := 0; i < 100; i++ {
		k.send(t, kernelFrame(100+i, 200))
	}
	if got := testFrames(t, vm.Out, 100, 5*time.Second); len(got) != 100 {
		t.Fatalf("%d of 100 frames forwarded", len(got))
	}
}

// TestVhostArm drives a net_vhost uplink's Arm and Receive by hand against
// a real frontend (net_virtio_user in this process): Arm enables the
// frontend's kicks and asks for one more poll, which finds a frame sent
// before the enable (it raised no kick); after the enable a frame kicks
// the fd; the Receive that gets it turns the kicks off again.
func TestVhostArm(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sock := fmt.Sprintf("%s/up.sock", t.TempDir())
	up := openUplink(t, Config{Devargs: "net_vhost0,iface=" + sock})
	if st := up.Status(); st.RxMode != RxInterrupts || !up.rearm {
		t.Fatalf("net_vhost uplink: RxMode %v, rearm %v", st.RxMode, up.rearm)
	}
	if up.IdlePoll() != 100*time.Millisecond {
		t.Errorf("IdlePoll %v in interrupt mode, want the 100ms safety net", up.IdlePoll())
	}
	fe := newFrontend(t, sock)
	waitLinkUp(t, up)
	fd := up.WaitFDs(nil)[0]
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		t.Fatal(err)
	}
	kicked := func(ms int) bool {
		var ev [1]unix.EpollEvent
		n, _ := unix.EpollWait(ep, ev[:], ms)
		return n > 0
	}
	var b vswitch.Burst
	receive := func() int {
		n := up.Receive(&b)
		up.Done(&b)
		return n
	}
	kicked(0)

	fe.send(t, 1) // before Arm: notifications are off, no kick
	if kicked(20) {
		t.Fatal("kick before Arm")
	}
	if !up.Arm() {
		t.Fatal("first Arm reports nothing pending: a frame sent before it would wait")
	}
	if n := eventually(receive); n != 1 {
		t.Fatalf("the poll after Arm got %d frames, want the one sent before", n)
	}
	if up.armed {
		t.Fatal("still armed after a Receive that got frames")
	}
	if !up.Arm() {
		t.Fatal("Arm after traffic reports nothing pending")
	}
	if receive() != 0 || up.Arm() {
		t.Fatal("second Arm with nothing new must let the poller sleep")
	}
	fe.send(t, 2)
	if !kicked(1000) {
		t.Fatal("no kick for a frame sent while armed")
	}
	if n := eventually(receive); n != 1 {
		t.Fatalf("received %d after the kick", n)
	}
	fe.send(t, 3) // disarmed by that Receive: no kick
	if kicked(20) {
		t.Error("kick after the Receive that should have turned them off")
	}
	if n := eventually(receive); n != 1 {
		t.Fatalf("received %d", n)
	}
}

// eventually calls receive until it returns frames or 100 tries passed.
func eventually(receive func() int) int {
	for i := 0; i < 100; i++ {
		if n := receive(); n > 0 {
			return n
		}
		time.Sleep(time.Millisecond)
	}
	return 0
}

// frontend is a virtio-net driver on the other end of a net_vhost uplink:
// DPDK's net_virtio_user in this process.
type frontend struct {
	dev *dpdk.Port
	tx  *dpdk.TxQueue
}

func newFrontend(t *testing.T, sock string) *frontend {
	t.Helper()
	pool, err := testEAL.NewPktmbufPool(2047, 32, 2048+dpdk.Headroom)
	if err != nil {
		t.Fatal(err)
	}
	d, err := testEAL.Probe(fmt.Sprintf("net_virtio_user%d,path=%s,queue_size=256,mac=02:00:00:00:00:0f", ringSeq.Add(1), sock))
	if err != nil {
		pool.Free()
		t.Fatal(err)
	}
	fe := &frontend{dev: d}
	t.Cleanup(func() {
		if fe.tx != nil {
			fe.tx.Close()
		}
		d.Close()
		pool.Free()
	})
	if err := d.Configure(dpdk.PortConfig{RxDesc: 256, TxDesc: 256, Pool: pool}); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	fe.tx = d.NewTxQueue(pool)
	return fe
}

func (fe *frontend) send(t *testing.T, seq int) {
	t.Helper()
	f := kernelFrame(seq, 60)
	if !fe.tx.Add([][]byte{f}, len(f)) {
		t.Fatal("frontend: Add failed")
	}
	if s, _ := fe.tx.Flush(); s != 1 {
		t.Fatal("frontend: frame not sent")
	}
}

func waitLinkUp(t *testing.T, p *Port) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if l, _ := p.dev.Link(); l.Up {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("the frontend never attached")
}

// TestVhostInterruptsInSwitch runs a net_vhost uplink under a sleeping
// switch poller: frames the frontend sends after idle periods wake it
// through the kick, none is lost.
func TestVhostInterruptsInSwitch(t *testing.T) {
	sock := fmt.Sprintf("%s/up.sock", t.TempDir())
	up := openUplink(t, Config{Devargs: "net_vhost0,iface=" + sock, IntrIdlePoll: 10 * time.Second})
	fe := newFrontend(t, sock)
	waitLinkUp(t, up)
	vm := switchWith(t, up, 1)
	lat := firstFrameLatencies(t, func(seq int) { fe.send(t, seq) }, vm, 0, 15)
	t.Logf("first frame after idle, virtio_user -> net_vhost -> VM port: min %v median %v max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 250*time.Millisecond {
		t.Errorf("median latency %v after idle: the poller was not woken by the kick", lat[len(lat)/2])
	}
	for i := 0; i < 200; i++ {
		fe.send(t, 100+i)
	}
	if got := testFrames(t, vm.Out, 200, 5*time.Second); len(got) != 200 {
		t.Fatalf("%d of 200 frames forwarded", len(got))
	}
	// The kick eventfd behind the fd was never read: it stays readable.
	if used := idleCPU(t, 300*time.Millisecond); used > 100*time.Millisecond {
		t.Errorf("idle switch with a net_vhost uplink used %v of CPU in 300ms", used)
	}
}
