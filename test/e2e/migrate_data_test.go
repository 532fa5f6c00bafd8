package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/nettest"
)

// TestQEMUMigrationData (commit 136d5b8: a peer guest streams 32-96
// MiB over TCP into the migrating guest, which checks their SHA-256
// after the migration) is not here: with TCP streams running through
// the migration, the migrated guest crashed or hung afterwards in about
// half the runs (the data that did arrive was intact). Under the same
// load, TCG guests migrated over DPDK's own vhost backend also show
// guest-kernel pages (pointers, jiffies) that differ between source and
// destination, which no backend writes: that points at QEMU under TCG
// losing guest writes under load, not at the backend, and a test of
// vhostd cannot be built on it until it is understood. The dirty logging
// of what vhostd writes is checked instead by TestQEMUMigrationRxRing
// (the two memories compared page by page) and TestQEMUMigrationRxVerify
// (the migrated guest checks every byte it received, with the guest at
// rest while vhostd writes: its link down, its TCP not acknowledging).
//
// Both fail when vhostd does not log its receive-buffer writes (a
// throwaway build without the logWritten call in switch/vmport.go's
// copyInto): RxRing found 11, 9 and 11 pages differing; RxVerify failed
// 7 runs of 7: 7-12 pages differing, and the guest's stack got only the
// first 27-36 of the 44-65 frames vhostd had delivered (the driver
// counted a length error on the next one, whose stale header still said
// num_buffers 0, and passed on nothing after it), so nc had a prefix of
// the stream, its bytes right, and the missing segments failed the test.

// TestQEMUMigrationRxRing is the sharpest check of the dirty logging of
// receive buffers: it compares the migrated guest's memory with the
// source's, page by page, after the migration.
//
// The migrating guest takes eth0 down: its driver leaves the receive
// buffers it posted in the ring but no longer consumes any, so vhostd is
// the only writer of those buffers (and of the used ring) while a peer
// pings the guest 20 times a second across the migration. The
// destination QEMU runs with -S: once migrated, it stays paused, and no
// one writes its memory (its vhost-user device does not even start). The
// source is paused too. Both memories are then saved with QMP pmemsave
// and must be equal: a page vhostd wrote after QEMU last copied it, and
// did not mark in the log, differs.
func TestQEMUMigrationRxRing(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	sock := func(name string) string { return filepath.Join(dir, name+".sock") }
	v := startVhostd(t, dir, "--socket", "src="+sock("src"), "--socket", "dst="+sock("dst"), "--socket", "peer="+sock("peer"))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	mover := vm{"vm1", "10.9.0.1", "52:54:00:00:00:01", sock("src")}
	peer := vm{"vm2", "10.9.0.2", "52:54:00:00:00:02", sock("peer")}
	cfg := mover.config(t, kernel, initrd)
	cfg.QMPSocket = filepath.Join(dir, "q0.qmp")
	guests := startGuests(t, ctx, cfg, peer.config(t, kernel, initrd))
	here, pg := guests[0], guests[1]
	q := dialQMP(t, ctx, cfg.QMPSocket)
	warmUp(t, ctx, pg, mover.ip)
	// The peer keeps sending to the guest's address although it no longer
	// answers ARP.
	if out, code, err := pg.Run(ctx, "arp -s "+mover.ip+" "+mover.mac); err != nil || code != 0 {
		t.Fatalf("peer: arp -s: exit %d, %v: %s", code, err, out)
	}
	if out, code, err := here.Run(ctx, "ip link set eth0 down"); err != nil || code != 0 {
		t.Fatalf("guest: eth0 down: exit %d, %v: %s", code, err, out)
	}

	// 100 pings, 50 ms apart: fewer than the receive buffers the driver
	// posted (a 256-entry ring), so none is dropped for want of room.
	pinged := make(chan error, 1)
	go func() {
		_, _, err := pg.Run(ctx, "ping -q -i 0.05 -c 100 -W 1 "+mover.ip)
		pinged <- err
	}()
	time.Sleep(time.Second)
	before := v.stats(t)["src"].TxPackets
	next := vm{"vm1-dst", mover.ip, mover.mac, sock("dst")}
	ncfg := next.config(t, kernel, initrd)
	ncfg.QMPSocket = filepath.Join(dir, "q1.qmp")
	_, nq, _ := migrateTo(t, ctx, q, ncfg, "unix:"+filepath.Join(dir, "mig1"), "-S")
	during := v.stats(t)["src"].TxPackets - before
	if err := <-pinged; err != nil {
		t.Fatalf("peer: ping: %v", err)
	}
	t.Logf("vhostd wrote %d frames into the guest's receive buffers from the start of the migration to its end", during)
	if during < 5 {
		t.Errorf("only %d frames reached the guest during the migration: the test wrote too little to say anything", during)
	}

	compareMemories(t, ctx, q, nq)
	q.Execute(ctx, "quit", nil, nil)
	select {
	case <-here.Done():
	case <-time.After(10 * time.Second):
		here.Kill()
	}
	if n := strings.Count(v.Log(), "level=error"); n > 0 {
		t.Logf("vhostd logged %d errors:\n%s", n, tail(v.Log(), 3000))
	}
}

// compareMemories saves the memory of the migrated guest's source (q,
// paused after the migration) and destination (nq, started with -S and
// paused) with pmemsave and fails the test unless they agree on every
// page.
func compareMemories(t *testing.T, ctx context.Context, q, nq *qemu.QMP) {
	t.Helper()
	for _, c := range []struct {
		q    *qemu.QMP
		want string
	}{{q, "postmigrate"}, {nq, "paused"}} {
		var st struct {
			Status string `json:"status"`
		}
		if err := c.q.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != c.want {
			t.Fatalf("QEMU status %q, %v; want %s", st.Status, err, c.want)
		}
	}
	mems := filepath.Join(t.TempDir(), "mem")
	size := int64(qemu.DefaultMemoryMB) << 20
	for i, qq := range []*qemu.QMP{q, nq} {
		args := map[string]any{"val": 0, "size": size, "filename": fmt.Sprintf("%s%d", mems, i)}
		if err := qq.Execute(ctx, "pmemsave", args, nil); err != nil {
			t.Fatalf("pmemsave: %v", err)
		}
	}
	diff, err := diffPages(mems+"0", mems+"1", size)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		var show []string
		for _, d := range diff[:min(len(diff), 16)] {
			show = append(show, fmt.Sprintf("%#x (bytes %#x-%#x, %d differ)", d.addr, d.first, d.last, d.n))
		}
		t.Errorf("%d of %d guest pages differ between source and destination after the migration; first ones:\n%s", len(diff), size/4096, strings.Join(show, "\n"))
	} else {
		t.Logf("all %d guest pages equal on source and destination", size/4096)
	}
}

// pageDiff is a page that differs between two memory dumps: its address,
// the offsets of the first and last differing bytes in it, and how many
// bytes differ.
type pageDiff struct {
	addr        uint64
	first, last int
	n           int
}

// diffPages compares the first size bytes of files a and b in 4 KiB
// pages and returns the pages that differ.
func diffPages(a, b string, size int64) ([]pageDiff, error) {
	fa, err := os.Open(a)
	if err != nil {
		return nil, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return nil, err
	}
	defer fb.Close()
	const page = 4096
	pa, pb := make([]byte, 1<<20), make([]byte, 1<<20)
	var diff []pageDiff
	for off := int64(0); off < size; off += int64(len(pa)) {
		if _, err := io.ReadFull(fa, pa); err != nil {
			return nil, fmt.Errorf("%s at %#x: %w", a, off, err)
		}
		if _, err := io.ReadFull(fb, pb); err != nil {
			return nil, fmt.Errorf("%s at %#x: %w", b, off, err)
		}
		for p := 0; p < len(pa); p += page {
			x, y := pa[p:p+page], pb[p:p+page]
			if bytes.Equal(x, y) {
				continue
			}
			d := pageDiff{addr: uint64(off) + uint64(p), first: -1}
			for i := range x {
				if x[i] != y[i] {
					if d.first < 0 {
						d.first = i
					}
					d.last = i
					d.n++
				}
			}
			diff = append(diff, d)
		}
	}
	return diff, nil
}

// TestQEMUMigrationRxVerify has the migrated guest itself verify every
// byte that vhostd wrote into its receive buffers while the guest's RAM
// was being copied.
//
// A peer behind vhostd's uplink (frames sent from a network namespace
// by the test) opens a TCP connection to nc listening in the guest,
// then the guest takes eth0 down: its driver leaves its receive buffers
// posted but consumes none, and the peer, a hand-made TCP sender with no
// retransmission or congestion window, streams segments of a random
// pattern into the connection, 20 a second, across the migration (to
// the destination QEMU, paused with -S). The segments vhostd delivered
// sit in the guest's receive buffers and used ring and are moved with
// its memory. On the destination, eth0 comes up: the driver hands the
// frames to the guest's TCP, which checks each segment's IPv4 and TCP
// checksums and queues the bytes in order for nc, which writes them to
// a file; the guest's sha256sum of that file must equal the pattern's,
// the file must hold every segment vhostd delivered (a segment lost or
// spoiled leaves a hole that holds back all later ones), and the guest
// counts no checksum or header error. The pages of the two paused
// memories are compared too, as in TestQEMUMigrationRxRing.
//
// The guest's nc listens on an address of its loopback interface, so
// that taking the frames does not depend on eth0's own address and
// routes being back when the driver first polls, from within "ip link
// set eth0 up" (a run with eth0's address passed too: a precaution).
//
// (Why not UDP: the guest's busybox nc speaks only TCP. Why not the
// kernel's TCP as the sender: without acknowledgements it stops sending
// new data at its first retransmission timeout, a few hundred ms in.)
func TestQEMUMigrationRxVerify(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	ns := newNS(t)
	local, nsIface := ifname("vdv"), ifname("vdw")
	veth, err := nettest.NewVeth(local, nsIface, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { veth.Close() })
	// A quiet link: no IPv6 (router solicitations, multicast reports) on
	// either end, no address at all, so that the only frames vhostd
	// receives from the uplink are the test's. (vhostd's af_packet
	// uplink also receives what this machine sends out of its end.)
	for _, c := range []string{"ipv6/conf/all/disable_ipv6", "ipv6/conf/default/disable_ipv6", "ipv6/conf/" + nsIface + "/disable_ipv6"} {
		if err := ns.Sysctl(c, "1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+local+"/disable_ipv6", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ns.SetUp(nsIface, true); err != nil {
		t.Fatal(err)
	}
	nsLink, err := ns.Netlink().LinkByName(nsIface)
	if err != nil {
		t.Fatal(err)
	}
	capture, err := ns.Capture(nsIface)
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()

	dir := sockDir(t)
	sock := func(name string) string { return filepath.Join(dir, name+".sock") }
	v := startVhostd(t, dir, "--socket", "src="+sock("src"), "--socket", "dst="+sock("dst"),
		"--uplink", "net_af_packet0,iface="+local)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	const (
		guestIP   = "10.9.7.1"  // eth0
		serviceIP = "10.9.17.1" // lo: where nc listens
		peerIP    = "10.9.7.3"  // the namespace's hand-made TCP peer
		port      = 5000
	)
	mover := vm{"vm1", guestIP, "52:54:00:00:07:01", sock("src")}
	guestMAC, _ := net.ParseMAC(mover.mac)
	cfg := mover.config(t, kernel, initrd)
	cfg.QMPSocket = filepath.Join(dir, "q0.qmp")
	here := startGuests(t, ctx, cfg)[0]
	q := dialQMP(t, ctx, cfg.QMPSocket)
	guestRun := func(g *qemu.Guest, what, cmd string) string {
		t.Helper()
		out, code, err := g.Run(ctx, cmd)
		if err != nil || code != 0 {
			t.Fatalf("guest: %s: exit %d, %v: %s", what, code, err, out)
		}
		return out
	}
	// A quiet guest too (no IPv6), a big receive buffer for the segments
	// that will wait in its TCP queue, and nc listening, its stdin held
	// open so that it does not half-close the connection.
	guestRun(here, "set up", fmt.Sprintf(`echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/eth0/disable_ipv6
ip addr add %s/32 dev lo
arp -s %s %s
echo '4096 1048576 4194304' >/proc/sys/net/ipv4/tcp_rmem
(sleep 900 2>/dev/null | nc -l -p %d >/tmp/rx 2>/tmp/nc.err) </dev/null >/dev/null 2>&1 &
i=0
while ! netstat -ltn | grep -q ':%d '; do
	i=$((i+1)); [ $i -gt 50 ] && { echo nc is not listening; cat /tmp/nc.err; exit 1; }
	sleep 0.1
done`, serviceIP, peerIP, nsLink.Attrs().HardwareAddr, port, port))

	c := &rawTCP{
		srcMAC: nsLink.Attrs().HardwareAddr, dstMAC: guestMAC,
		srcIP: netip.MustParseAddr(peerIP), dstIP: netip.MustParseAddr(serviceIP),
		srcPort: 40000 + uint16(rand.IntN(20000)), dstPort: port,
		id: uint16(rand.Uint32()), seq: rand.Uint32(),
	}
	handshake(t, c, capture)
	guestRun(here, "connection", "netstat -tn | grep '"+peerIP+":.*ESTABLISHED'")
	t.Logf("connected %s:%d -> %s:%d; the guest's window is %d bytes, MSS %d", peerIP, c.srcPort, serviceIP, port, c.peerWindow, c.peerMSS)

	guestRun(here, "eth0 down", "ip link set eth0 down")
	snmpBefore := parseSNMP(guestRun(here, "counters", guestCounters))

	// The stream: as many segments as the guest's window takes (it cannot
	// grow while the guest reads nothing), fewer than the 256 receive
	// buffers its driver posted.
	const segSize = 512
	nseg := min(int(c.peerWindow)/segSize, 200)
	if nseg < 60 {
		t.Fatalf("the guest's window (%d bytes) takes only %d segments of %d bytes", c.peerWindow, nseg, segSize)
	}
	pattern := make([]byte, nseg*segSize)
	for i := range pattern {
		pattern[i] = byte(rand.Uint32())
	}
	stBefore := v.stats(t)
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		i := 0
		defer func() { sent <- i }()
		for ; i < nseg; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := capture.Write(c.frame(tcpACK|tcpPSH, pattern[i*segSize:(i+1)*segSize])); err != nil {
				t.Errorf("peer: %v", err)
				return
			}
		}
	}()
	time.Sleep(time.Second)
	atStart := v.stats(t)["src"].TxPackets
	next := vm{"vm1-dst", mover.ip, mover.mac, sock("dst")}
	ncfg := next.config(t, kernel, initrd)
	ncfg.QMPSocket = filepath.Join(dir, "q1.qmp")
	there, nq, _ := migrateTo(t, ctx, q, ncfg, "unix:"+filepath.Join(dir, "mig1"), "-S")
	atEnd := v.stats(t)["src"].TxPackets
	close(stop)
	nsent := <-sent
	time.Sleep(200 * time.Millisecond) // the uplink polls every millisecond
	stAfter := v.stats(t)
	delivered := stAfter["src"].TxPackets - stBefore["src"].TxPackets
	t.Logf("the peer sent %d segments of %d bytes; vhostd wrote %d frames into the guest's receive buffers, %d of them from the start of the migration to its end; the uplink received %d frames",
		nsent, segSize, delivered, atEnd-atStart, uplinkRx(stAfter)-uplinkRx(stBefore))
	if atEnd-atStart < 5 {
		t.Errorf("only %d frames reached the guest during the migration: the test wrote too little to say anything", atEnd-atStart)
	}
	if d := stAfter["dst"].TxPackets - stBefore["dst"].TxPackets; d != 0 {
		t.Errorf("vhostd wrote %d frames to the destination port while the guest's link was down", d)
	}

	compareMemories(t, ctx, q, nq)
	if err := nq.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatalf("destination: cont: %v", err)
	}
	// Link up: the driver hands over what waited in its ring; nc has it
	// all once the file stops growing.
	out := guestRun(there, "eth0 up and check", `ip link set eth0 up
last=-1
for i in $(seq 1 60); do
	sleep 0.5
	n=$(stat -c %s /tmp/rx)
	[ "$n" = "$last" ] && break
	last=$n
done
kill $(pidof nc) $(pidof sleep) 2>/dev/null
echo "bytes $(stat -c %s /tmp/rx)"
echo "sha256 $(sha256sum </tmp/rx)"
`+guestCounters)
	var got struct {
		bytes int
		sum   string
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "bytes":
			got.bytes, _ = strconv.Atoi(f[1])
		case len(f) >= 2 && f[0] == "sha256":
			got.sum = f[1]
		}
	}
	snmp := parseSNMP(out)
	delta := func(k string) int64 { return snmp[k] - snmpBefore[k] }
	t.Logf("the guest received %d bytes (%d segments) in order, sha256 %s; its driver took %d frames (%d length errors, %d dropped), its IPv4 %d packets (%d header errors), its TCP %d segments (%d checksum errors)",
		got.bytes, got.bytes/segSize, got.sum, delta("Eth0.rx_packets"), delta("Eth0.rx_length_errors"), delta("Eth0.rx_dropped"),
		delta("Ip.InReceives"), delta("Ip.InHdrErrors"), delta("Tcp.InSegs"), delta("Tcp.InCsumErrors"))

	if got.bytes%segSize != 0 || got.bytes > len(pattern) {
		t.Errorf("the guest received %d bytes: not a whole number of the %d-byte segments sent (at most %d)", got.bytes, segSize, len(pattern))
	} else if want := fmt.Sprintf("%x", sha256.Sum256(pattern[:got.bytes])); got.sum != want {
		t.Errorf("the guest's sha256 of the %d bytes it received is %s, want %s: some byte differs from what the peer sent", got.bytes, got.sum, want)
	}
	if uint64(got.bytes/segSize) != delivered {
		t.Errorf("the guest's TCP took %d segments in order, but vhostd wrote %d frames into its receive buffers: the segments after the first one lost never reached nc",
			got.bytes/segSize, delivered)
	}
	for _, c := range []struct {
		k    string
		want int64
	}{
		{"Eth0.rx_packets", int64(delivered)}, {"Eth0.rx_errors", 0}, {"Eth0.rx_length_errors", 0}, {"Eth0.rx_frame_errors", 0}, {"Eth0.rx_dropped", 0},
		{"Ip.InReceives", int64(delivered)}, {"Ip.InHdrErrors", 0}, {"Ip.InAddrErrors", 0},
		{"Tcp.InSegs", int64(delivered)}, {"Tcp.InCsumErrors", 0}, {"Tcp.InErrs", 0},
	} {
		if d := delta(c.k); d != c.want {
			t.Errorf("guest counter %s went up by %d across the migration, want %d", c.k, d, c.want)
		}
	}

	q.Execute(ctx, "quit", nil, nil)
	select {
	case <-here.Done():
	case <-time.After(10 * time.Second):
		here.Kill()
	}
	if n := strings.Count(v.Log(), "level=error"); n > 0 {
		t.Logf("vhostd logged %d errors:\n%s", n, tail(v.Log(), 3000))
	}
}

// handshake opens c's connection: it sends a SYN until the receiver's
// SYN-ACK comes back through capture (the first may be lost while the
// switch learns), then acknowledges it.
func handshake(t *testing.T, c *rawTCP, capture *nettest.Capture) {
	t.Helper()
	isn := c.seq
	buf := make([]byte, 2048)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.seq = isn
		if err := capture.Write(c.frame(tcpSYN, nil)); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(time.Second); time.Now().Before(end); {
			n, err := capture.Read(buf, 100*time.Millisecond)
			if err == nettest.ErrNoFrame {
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			switch err := c.synAck(buf[:n]); {
			case err == nil:
				if err := capture.Write(c.frame(tcpACK, nil)); err != nil {
					t.Fatal(err)
				}
				return
			case err != errNotOurs:
				t.Fatalf("handshake: %v", err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("handshake: no SYN-ACK from the guest within 30 s")
		}
	}
}

// guestCounters is a guest command that prints the guest's IP and TCP
// counters (/proc/net/snmp) and eth0's receive counters, the latter as
// an "Eth0:" pair of lines in the same form.
const guestCounters = `cat /proc/net/snmp
s=/sys/class/net/eth0/statistics
echo "Eth0: rx_packets rx_errors rx_length_errors rx_frame_errors rx_dropped"
echo "Eth0: $(cat $s/rx_packets $s/rx_errors $s/rx_length_errors $s/rx_frame_errors $s/rx_dropped | tr '\n' ' ')"`

// parseSNMP reads the "Proto: Name ..." / "Proto: value ..." line pairs
// of /proc/net/snmp in s into a map from "Proto.Name" to value.
func parseSNMP(s string) map[string]int64 {
	m := map[string]int64{}
	var names []string
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			names = f
			continue
		}
		if len(names) != len(f) || names[0] != f[0] {
			continue
		}
		for i := 1; i < len(f); i++ {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			m[strings.TrimSuffix(f[0], ":")+"."+names[i]] = n
		}
	}
	return m
}

// uplinkRx is what the ports other than the guest's two (the uplink)
// received.
func uplinkRx(st map[string]control.PortStats) uint64 {
	var n uint64
	for name, s := range st {
		if name != "src" && name != "dst" {
			n += s.RxPackets
		}
	}
	return n
}
