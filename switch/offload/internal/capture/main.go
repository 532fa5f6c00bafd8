// Command capture records, from Linux itself, the frames the offload
// package's tests compare against. It is run by hand, as root, and its
// output is committed under switch/offload/testdata:
//
//	go run ./switch/offload/internal/capture -out switch/offload/testdata
//
// It builds three network namespaces: a sender, a bridge and a receiver,
// joined by two veth pairs (sender s0 <-> b0, bridge b1 <-> r0), with b0
// and b1 in one Linux bridge. s0 keeps its offloads, so the sender's TCP
// stack hands b0 TSO super-frames with partial checksums; b1 has TSO, GSO
// and checksum offload turned off, so the bridge's transmit path segments
// those same super-frames and completes their checksums in software before
// b1. Two AF_PACKET sockets with PACKET_VNET_HDR in the bridge namespace
// record what arrives on b0 (with the virtio_net_hdr Linux derives from
// the skb: NEEDS_CSUM, gso_type, gso_size, csum_start/offset) and what
// leaves on b1 (Linux's own segments, fully checksummed). Over IPv4 and
// over IPv6 it makes one TCP transfer, UDP sends with UDP_SEGMENT (USO),
// and a TCP transfer with ECN (see ecn; needs nftables); only frames from
// the sender are kept. Needs ip, ethtool and nft (Debian's iproute2,
// ethtool and nftables). Each run has new TCP sequence numbers, so the
// files change; the tests do not depend on any particular run.
//
// File format (see offload's capture_test.go): the 8 bytes "VNETCAP1",
// then records: 1 byte where (0: arrived on b0, 1: left on b1), 10 bytes
// virtio_net_hdr as Linux gave it, a 4-byte little-endian frame length,
// the frame.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func main() {
	out := flag.String("out", "switch/offload/testdata", "directory for the capture files")
	size := flag.Int("bytes", 96<<10, "bytes of the bulk write of each transfer")
	flag.Parse()
	if err := run(*out, *size); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(1)
	}
}

type names struct{ s, b, r string }

func run(out string, size int) error {
	tag := fmt.Sprint(os.Getpid())
	n := names{s: "offcap-s-" + tag, b: "offcap-b-" + tag, r: "offcap-r-" + tag}
	defer func() {
		for _, ns := range []string{n.s, n.b, n.r} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	}()
	if err := setup(n); err != nil {
		return fmt.Errorf("set up namespaces: %w", err)
	}
	for _, c := range []struct {
		file, src, dst string
		udp, ecn       bool
	}{
		{"tcp4.vnetcap", "10.77.0.1", "10.77.0.2", false, false},
		{"tcp6.vnetcap", "fd77::1", "fd77::2", false, false},
		{"udp4.vnetcap", "10.77.0.1", "10.77.0.2", true, false},
		{"udp6.vnetcap", "fd77::1", "fd77::2", true, false},
		{"tcp4-ecn.vnetcap", "10.77.0.1", "10.77.0.2", false, true},
		{"tcp6-ecn.vnetcap", "fd77::1", "fd77::2", false, true},
	} {
		if c.ecn {
			if err := ecn(n, true); err != nil {
				return err
			}
		}
		recs, err := capture(n, c.src, c.dst, size, c.udp)
		if c.ecn {
			if err := ecn(n, false); err != nil {
				return err
			}
		}
		if err != nil {
			return fmt.Errorf("capture %s: %w", c.file, err)
		}
		path := filepath.Join(out, c.file)
		if err := os.WriteFile(path, recs, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Printf("%s: %d bytes\n", path, len(recs))
	}
	return nil
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func setup(n names) error {
	in := func(ns string, args ...string) []string { return append([]string{"ip", "netns", "exec", ns}, args...) }
	cmds := [][]string{
		{"ip", "netns", "add", n.s}, {"ip", "netns", "add", n.b}, {"ip", "netns", "add", n.r},
		{"ip", "link", "add", "s0", "netns", n.s, "type", "veth", "peer", "name", "b0", "netns", n.b},
		{"ip", "link", "add", "b1", "netns", n.b, "type", "veth", "peer", "name", "r0", "netns", n.r},
		in(n.b, "ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"),
		in(n.b, "ip", "link", "set", "b0", "master", "br0"),
		in(n.b, "ip", "link", "set", "b1", "master", "br0"),
		// The bridge's egress does the segmentation and checksums itself.
		in(n.b, "ethtool", "-K", "b1", "tso", "off", "gso", "off", "tx", "off", "sg", "off"),
		in(n.b, "ip", "link", "set", "b0", "up"), in(n.b, "ip", "link", "set", "b1", "up"),
		in(n.b, "ip", "link", "set", "br0", "up"),
		in(n.s, "ip", "addr", "add", "10.77.0.1/24", "dev", "s0"),
		in(n.s, "ip", "addr", "add", "fd77::1/64", "dev", "s0", "nodad"),
		in(n.s, "ip", "link", "set", "s0", "up"), in(n.s, "ip", "link", "set", "lo", "up"),
		in(n.r, "ip", "addr", "add", "10.77.0.2/24", "dev", "r0"),
		in(n.r, "ip", "addr", "add", "fd77::2/64", "dev", "r0", "nodad"),
		in(n.r, "ip", "link", "set", "r0", "up"), in(n.r, "ip", "link", "set", "lo", "up"),
	}
	for _, c := range cmds {
		if err := sh(c...); err != nil {
			return err
		}
	}
	return nil
}

// ecn turns ECN on for the sender and has the receiver's namespace mark
// every arriving ECN-capable packet CE (after the bridge, so the captures
// do not see the mark). The receiver echoes ECE, the sender answers with
// CWR, and Linux marks those super-frames SKB_GSO_TCP_ECN: the ECN bit of
// gso_type, and a CWR flag that only the first segment may carry.
func ecn(n names, on bool) error {
	in := func(ns string, args ...string) []string { return append([]string{"ip", "netns", "exec", ns}, args...) }
	if !on {
		if err := sh(in(n.r, "nft", "flush", "ruleset")...); err != nil {
			return err
		}
		return sh(in(n.s, "sysctl", "-qw", "net.ipv4.tcp_ecn=2")...)
	}
	for _, c := range [][]string{
		in(n.s, "sysctl", "-qw", "net.ipv4.tcp_ecn=1"),
		in(n.r, "nft", "add", "table", "inet", "offcap"),
		in(n.r, "nft", "add chain inet offcap pre { type filter hook prerouting priority -300; }"),
		in(n.r, "nft", "add rule inet offcap pre ip ecn ect0 ip ecn set ce"),
		in(n.r, "nft", "add rule inet offcap pre ip6 ecn ect0 ip6 ecn set ce"),
	} {
		if err := sh(c...); err != nil {
			return fmt.Errorf("ecn (needs nftables): %w", err)
		}
	}
	return nil
}

// inNS runs f on a thread switched into namespace name; sockets f creates
// stay in that namespace.
func inNS(name string, f func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// This thread is in the wrong namespace: let it die with us.
		panic(fmt.Sprintf("restore netns: %v", err))
	}
	return ferr
}

type record struct {
	where byte
	hdr   [10]byte
	frame []byte
}

type sniffer struct {
	fd    int
	where byte
	src   net.IP
	mu    sync.Mutex
	recs  []record
	stop  chan struct{}
	done  chan struct{}
	inval int // frames Linux could not describe with a virtio_net_hdr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func newSniffer(ifname string, where byte, src net.IP) (*sniffer, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
	tv := unix.Timeval{Usec: 100000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", ifname, err)
	}
	return &sniffer{fd: fd, where: where, src: src, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// fromSender reports whether an Ethernet frame is IPv4/IPv6 TCP or UDP
// from src.
func fromSender(f []byte, src net.IP) bool {
	if len(f) < 14 {
		return false
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		return len(f) >= 34 && (f[23] == 6 || f[23] == 17) && net.IP(f[26:30]).Equal(src)
	case 0x86dd:
		return len(f) >= 54 && (f[20] == 6 || f[20] == 17) && net.IP(f[22:38]).Equal(src)
	}
	return false
}

func (s *sniffer) loop() {
	defer close(s.done)
	buf := make([]byte, 10+(1<<17))
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EINVAL) {
			s.inval++
			continue
		}
		if err != nil || n < 10 {
			return
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		outgoing := ll != nil && ll.Pkttype == unix.PACKET_OUTGOING
		// b0: what the sender sent in; b1: what the bridge sent out.
		if outgoing != (s.where == 1) || !fromSender(buf[10:n], s.src) {
			continue
		}
		var r record
		r.where = s.where
		copy(r.hdr[:], buf[:10])
		r.frame = append([]byte(nil), buf[10:n]...)
		s.mu.Lock()
		s.recs = append(s.recs, r)
		s.mu.Unlock()
	}
}

func capture(n names, src, dst string, size int, udp bool) ([]byte, error) {
	srcIP := net.ParseIP(src)
	var in, out *sniffer
	err := inNS(n.b, func() error {
		var err error
		if in, err = newSniffer("b0", 0, srcIP); err != nil {
			return err
		}
		out, err = newSniffer("b1", 1, srcIP)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer unix.Close(in.fd)
	defer unix.Close(out.fd)
	go in.loop()
	go out.loop()

	// The data: pseudo-random, so a checksum or offset slip shows.
	rng := rand.New(rand.NewPCG(15, uint64(size)))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// Small writes first (single frames with a partial checksum), then a
	// bulk write (super-frames), then a small tail (PSH, FIN).
	writes := [][]byte{data[:100], data[100:400], data[400 : size-777], data[size-777:]}

	// err is the one from opening the sniffers, nil by now.
	if udp {
		err = transferUDP(n, dst, data)
	} else {
		err = transferTCP(n, dst, data, writes)
	}
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	close(in.stop)
	close(out.stop)
	<-in.done
	<-out.done
	if in.inval+out.inval > 0 {
		fmt.Printf("%s: %d frames had no virtio_net_hdr (EINVAL)\n", src, in.inval+out.inval)
	}
	var buf bytes.Buffer
	buf.WriteString("VNETCAP1")
	gso := 0
	for _, s := range []*sniffer{in, out} {
		for _, r := range s.recs {
			if r.hdr[1] != 0 {
				gso++
			}
			buf.WriteByte(r.where)
			buf.Write(r.hdr[:])
			binary.Write(&buf, binary.LittleEndian, uint32(len(r.frame)))
			buf.Write(r.frame)
		}
	}
	fmt.Printf("%s: %d frames in on b0 (%d GSO), %d out on b1\n", src, len(in.recs), gso, len(out.recs))
	return buf.Bytes(), nil
}

// transferTCP sends data over one TCP connection, in the given writes.
func transferTCP(n names, dst string, data []byte, writes [][]byte) error {
	var ln net.Listener
	addr := net.JoinHostPort(dst, "7715")
	if err := inNS(n.r, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var conn net.Conn
	if err := inNS(n.s, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	conn.(*net.TCPConn).SetNoDelay(true)
	for _, w := range writes {
		if _, err := conn.Write(w); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			return fmt.Errorf("receiver got %d bytes, not the %d sent", len(b), len(data))
		}
	case <-time.After(10 * time.Second):
		return errors.New("transfer timed out")
	}
	return nil
}

// transferUDP sends datagrams with UDP_SEGMENT (UDP GSO, gso_type UDP_L4):
// a small one without it, then super-datagrams of 1400-byte segments.
func transferUDP(n names, dst string, data []byte) error {
	addr := net.JoinHostPort(dst, "7716")
	var pc net.PacketConn
	if err := inNS(n.r, func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listen udp: %w", err)
	}
	defer pc.Close()
	got := make(chan int, 1)
	go func() {
		total := 0
		buf := make([]byte, 65536)
		for {
			pc.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				got <- total
				return
			}
			total += k
		}
	}()
	var conn *net.UDPConn
	if err := inNS(n.s, func() error {
		c, err := net.Dial("udp", addr)
		if err == nil {
			conn = c.(*net.UDPConn)
		}
		return err
	}); err != nil {
		return fmt.Errorf("dial udp: %w", err)
	}
	defer conn.Close()
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	sent := 0
	for i, w := range [][]byte{data[:100], data[100:14100], data[14100:74100], data[74100:80000]} {
		seg := 1400
		if i == 0 {
			seg = 0
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg)
		}); err != nil || serr != nil {
			return fmt.Errorf("UDP_SEGMENT: %v %v", err, serr)
		}
		if _, err := conn.Write(w); err != nil {
			return fmt.Errorf("write udp: %w", err)
		}
		sent += len(w)
		time.Sleep(100 * time.Millisecond)
	}
	if total := <-got; total != sent {
		return fmt.Errorf("receiver got %d UDP bytes, not the %d sent", total, sent)
	}
	return nil
}
