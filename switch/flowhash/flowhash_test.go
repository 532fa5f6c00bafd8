package flowhash

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// frame builds an Ethernet frame: MACs from a and b, vlans VLAN tags, then
// IPv4 or IPv6 from ip addresses a and b, protocol proto, ports sp and dp,
// and payload bytes of padding.
type flow struct {
	v6       bool
	vlans    int
	a, b     uint32 // addresses (IPv6: spread over the 16 bytes)
	proto    uint8
	sp, dp   uint16
	fragment uint16 // IPv4 flags+offset word
}

func (f flow) frame() []byte {
	b := make([]byte, 0, 128)
	b = append(b, 2, 0, 0, 0, 0, byte(f.b), 2, 0, 0, 0, 0, byte(f.a))
	for range f.vlans {
		b = append(b, 0x81, 0x00, 0, 7)
	}
	if f.v6 {
		b = append(b, 0x86, 0xdd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		ip[6] = f.proto
		ip[7] = 64
		binary.BigEndian.PutUint32(ip[8:], 0x20010db8)
		binary.BigEndian.PutUint32(ip[20:], f.a)
		binary.BigEndian.PutUint32(ip[24:], 0x20010db8)
		binary.BigEndian.PutUint32(ip[36:], f.b)
		b = append(b, ip...)
	} else {
		b = append(b, 0x08, 0x00)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[6:], f.fragment)
		ip[8] = 64
		ip[9] = f.proto
		binary.BigEndian.PutUint32(ip[12:], f.a)
		binary.BigEndian.PutUint32(ip[16:], f.b)
		b = append(b, ip...)
	}
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], f.sp)
	binary.BigEndian.PutUint16(l4[2:], f.dp)
	return append(b, l4...)
}

func (f flow) reverse() flow {
	f.a, f.b, f.sp, f.dp = f.b, f.a, f.dp, f.sp
	return f
}

func TestSymmetric(t *testing.T) {
	for _, f := range []flow{
		{a: 0x0a000001, b: 0x0a000002, proto: protoTCP, sp: 40000, dp: 80},
		{a: 0x0a000001, b: 0x0a000002, proto: protoUDP, sp: 5353, dp: 53, vlans: 1},
		{a: 0x0a000001, b: 0x0a000002, proto: protoSCTP, sp: 1, dp: 2, vlans: 2},
		{a: 0x0a000001, b: 0x0a000002, proto: 1}, // ICMP
		{v6: true, a: 1, b: 2, proto: protoTCP, sp: 40000, dp: 443},
		{v6: true, a: 1, b: 2, proto: 58}, // ICMPv6
	} {
		if h, r := Bytes(f.frame()), Bytes(f.reverse().frame()); h != r {
			t.Errorf("%+v: hash %#x, reversed %#x", f, h, r)
		}
	}
	// Non-IP: the MACs, symmetric too.
	arp := make([]byte, 42)
	copy(arp, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06})
	rev := append([]byte(nil), arp...)
	copy(rev[0:6], arp[6:12])
	copy(rev[6:12], arp[0:6])
	if Bytes(arp) != Bytes(rev) {
		t.Error("L2 hash not symmetric")
	}
}

// TestFieldsCount checks that each field the hash covers changes it, and
// what it must ignore does not.
func TestFieldsCount(t *testing.T) {
	base := flow{a: 0x0a000001, b: 0x0a000002, proto: protoTCP, sp: 40000, dp: 80}
	h := Bytes(base.frame())
	for name, f := range map[string]flow{
		"source port": {a: 0x0a000001, b: 0x0a000002, proto: protoTCP, sp: 40001, dp: 80},
		"dest port":   {a: 0x0a000001, b: 0x0a000002, proto: protoTCP, sp: 40000, dp: 81},
		"address":     {a: 0x0a000003, b: 0x0a000002, proto: protoTCP, sp: 40000, dp: 80},
		"protocol":    {a: 0x0a000001, b: 0x0a000002, proto: protoUDP, sp: 40000, dp: 80},
	} {
		if Bytes(f.frame()) == h {
			t.Errorf("%s changed, hash did not", name)
		}
	}
	// A VLAN tag does not change a flow's hash.
	tagged := base
	tagged.vlans = 1
	if Bytes(tagged.frame()) != h {
		t.Error("a VLAN tag changed the hash")
	}
	// Fragments hash on addresses only: the first (MF, ports present) and
	// a later one (offset, no ports) agree, whatever the bytes at the port
	// position.
	first := base
	first.fragment = 0x2000
	later := base
	later.fragment = 0x00b9
	later.sp, later.dp = 0x1234, 0x5678
	if Bytes(first.frame()) != Bytes(later.frame()) {
		t.Error("fragments of one datagram hash differently")
	}
	// Likewise IPv6 beyond its first 8 bytes of source address.
	v6 := flow{v6: true, a: 1, b: 2, proto: protoTCP, sp: 1, dp: 2}
	w6 := v6
	w6.a = 3
	if Bytes(v6.frame()) == Bytes(w6.frame()) {
		t.Error("IPv6 source address ignored")
	}
}

// TestSpread hashes N flows (random addresses and ports, as many
// connections to one server would look) onto 2, 4 and 8 queues and
// reports the distribution; every queue must be within 20% of the mean.
func TestSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, v6 := range []bool{false, true} {
		for _, nq := range []int{2, 4, 8} {
			const flows = 4096
			counts := make([]int, nq)
			for range flows {
				f := flow{v6: v6, a: 0x0a000000 | rng.Uint32N(256), b: 0x0a0000fe, proto: protoTCP,
					sp: uint16(32768 + rng.UintN(28000)), dp: 5201}
				counts[Queue(Bytes(f.frame()), nq)]++
			}
			mean := flows / nq
			t.Logf("v6=%v %d flows on %d queues: %v", v6, flows, nq, counts)
			for q, c := range counts {
				if c < mean*8/10 || c > mean*12/10 {
					t.Errorf("v6=%v, %d queues: queue %d got %d flows, mean %d", v6, nq, q, c, mean)
				}
			}
		}
	}
	// Few flows: 8 consecutive client ports to one server over 2 queues
	// must not all land on one (the source port is the only thing that
	// differs between a client's connections).
	counts := make([]int, 2)
	for i := range 8 {
		f := flow{a: 0x0a000001, b: 0x0a000002, proto: protoTCP, sp: uint16(50000 + i), dp: 5201}
		counts[Queue(Bytes(f.frame()), 2)]++
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Errorf("8 consecutive source ports over 2 queues: %v", counts)
	}
}

// TestSegments: the hash of a frame split anywhere is that of the whole.
func TestSegments(t *testing.T) {
	for _, f := range []flow{
		{a: 1, b: 2, proto: protoTCP, sp: 3, dp: 4, vlans: 2},
		{v6: true, a: 1, b: 2, proto: protoUDP, sp: 3, dp: 4, vlans: 2},
	} {
		b := f.frame()
		want := Bytes(b)
		for cut := 1; cut < len(b); cut++ {
			for cut2 := cut; cut2 < len(b); cut2 += 7 {
				if got := Of([][]byte{b[:cut], b[cut:cut2], b[cut2:]}); got != want {
					t.Fatalf("%+v split at %d,%d: %#x, want %#x", f, cut, cut2, got, want)
				}
			}
		}
	}
	if Of(nil) != 0 {
		t.Error("Of(nil) != 0")
	}
}

// TestTruncated: every prefix of every kind of frame hashes without
// reading outside it (the race detector and bounds checks would panic).
func TestTruncated(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, f := range []flow{
		{a: 1, b: 2, proto: protoTCP, sp: 3, dp: 4, vlans: 2},
		{v6: true, a: 1, b: 2, proto: protoUDP, sp: 3, dp: 4, vlans: 1},
	} {
		b := f.frame()
		for n := 0; n <= len(b); n++ {
			Bytes(b[:n])
			Of([][]byte{b[:n]})
		}
	}
	// Random bytes, including random IPv4 header lengths.
	buf := make([]byte, 100)
	for range 10000 {
		n := rng.IntN(len(buf))
		for i := range buf[:n] {
			buf[i] = byte(rng.Uint32())
		}
		if n > 14 && rng.IntN(2) == 0 {
			buf[12], buf[13], buf[14] = 0x08, 0x00, 0x40|byte(rng.IntN(16))
		}
		Bytes(buf[:n])
	}
}

func TestQueue(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8} {
		for _, h := range []uint32{0, 1, 1 << 31, ^uint32(0)} {
			if q := Queue(h, n); q < 0 || q >= n {
				t.Errorf("Queue(%#x, %d) = %d", h, n, q)
			}
		}
	}
}

func TestNoAllocs(t *testing.T) {
	b := flow{v6: true, a: 1, b: 2, proto: protoTCP, sp: 3, dp: 4}.frame()
	segs := [][]byte{b[:20], b[20:]}
	if n := testing.AllocsPerRun(100, func() { Of(segs) }); n != 0 {
		t.Errorf("Of allocates %v times", n)
	}
}

func BenchmarkHash(b *testing.B) {
	for _, f := range []flow{
		{a: 1, b: 2, proto: protoTCP, sp: 3, dp: 4},
		{v6: true, a: 1, b: 2, proto: protoTCP, sp: 3, dp: 4},
	} {
		frame := f.frame()
		segs := [][]byte{frame}
		b.Run(fmt.Sprintf("v6=%v", f.v6), func(b *testing.B) {
			b.ReportAllocs()
			var h uint32
			for b.Loop() {
				h += Of(segs)
			}
			_ = h
		})
	}
}
