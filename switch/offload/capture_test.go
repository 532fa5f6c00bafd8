package offload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// The capture files come from internal/capture: TCP transfers over veth
// between network namespaces, recorded on a Linux bridge's ingress port
// (super-frames with the virtio_net_hdr Linux derives from each skb) and
// egress port (the same data after Linux's own software GSO and checksum).
// The UDP ones are UDP_SEGMENT (USO) sends of 1400-byte segments; in the
// ECN ones the receiver saw every packet CE-marked, so the sender's
// super-frames carry CWR and the ECN bit of gso_type.
var captureFiles = []string{
	"testdata/tcp4.vnetcap", "testdata/tcp6.vnetcap",
	"testdata/udp4.vnetcap", "testdata/udp6.vnetcap",
	"testdata/tcp4-ecn.vnetcap", "testdata/tcp6-ecn.vnetcap",
}

// allHost is every offload a guest can ask of the device.
const allHost = FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN | FeatureHostUFO | FeatureHostUSO

// capRecord is one frame of a capture file.
type capRecord struct {
	out   bool // left the bridge on b1 (Linux's segments), else arrived on b0
	hdr   Header
	frame []byte
}

func readCapture(t testing.TB, path string) (in, out []capRecord) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read capture: %v", err)
	}
	if len(b) < 8 || string(b[:8]) != "VNETCAP1" {
		t.Fatalf("%s: not a VNETCAP1 file", path)
	}
	b = b[8:]
	for len(b) > 0 {
		if len(b) < 15 {
			t.Fatalf("%s: truncated record", path)
		}
		var r capRecord
		r.out = b[0] == 1
		if !r.hdr.Decode(b[1:11]) {
			t.Fatal("decode header")
		}
		n := int(binary.LittleEndian.Uint32(b[11:]))
		if len(b) < 15+n {
			t.Fatalf("%s: truncated frame", path)
		}
		r.frame = b[15 : 15+n]
		b = b[15+n:]
		if r.out {
			out = append(out, r)
		} else {
			in = append(in, r)
		}
	}
	if len(in) == 0 || len(out) == 0 {
		t.Fatalf("%s: %d frames in, %d out", path, len(in), len(out))
	}
	return in, out
}

// segKey identifies a segment of one flow in one direction: TCP by
// sequence and acknowledgement numbers, UDP by its first payload bytes
// (the captured data is pseudo-random).
type segKey struct {
	seq, ack uint32
	paylen   int
	head     [16]byte
}

func keyOf(t testing.TB, frame []byte) segKey {
	t.Helper()
	l, r := parse(frame)
	if r != ReasonOK {
		t.Fatalf("captured frame does not parse: %v", r)
	}
	k := segKey{paylen: l.IPLenEnd - l.Payload}
	if l.L4Proto == protoTCP {
		k.seq = binary.BigEndian.Uint32(frame[l.L4Off+4:])
		k.ack = binary.BigEndian.Uint32(frame[l.L4Off+8:])
	} else {
		copy(k.head[:], frame[l.Payload:l.IPLenEnd])
	}
	return k
}

// linuxSegments indexes the frames Linux sent out on b1.
func linuxSegments(t testing.TB, out []capRecord) map[segKey][]byte {
	m := make(map[segKey][]byte)
	for _, r := range out {
		if r.hdr != (Header{}) {
			t.Fatalf("Linux's own segment carries a header: %+v", r.hdr)
		}
		k := keyOf(t, r.frame)
		if _, dup := m[k]; dup {
			t.Fatalf("two captured segments with key %+v (a retransmission?)", k)
		}
		m[k] = r.frame
	}
	return m
}

// diffAt describes the first difference of two frames.
func diffAt(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("byte %d: %#02x vs Linux's %#02x", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d vs Linux's %d", len(a), len(b))
}

// TestCaptureValidate: every header Linux produced is valid for a guest
// that negotiated the offloads, and refused for one that did not.
func TestCaptureValidate(t *testing.T) {
	for _, f := range captureFiles {
		in, _ := readCapture(t, f)
		gso := 0
		for i, r := range in {
			if _, reason := Validate(&r.hdr, r.frame, allHost); reason != ReasonOK {
				t.Errorf("%s frame %d (%+v): %v, want ok", f, i, r.hdr, reason)
			}
			if _, reason := Validate(&r.hdr, r.frame, allHost&^FeatureCsum); reason != ReasonOffloadNotNegotiated {
				t.Errorf("%s frame %d without CSUM: %v, want not_negotiated", f, i, reason)
			}
			if r.hdr.GSO() != GSONone {
				gso++
				if _, reason := Validate(&r.hdr, r.frame, allHost&^(FeatureHostTSO4|FeatureHostTSO6|FeatureHostUSO)); reason != ReasonOffloadNotNegotiated {
					t.Errorf("%s frame %d without TSO/USO: %v, want not_negotiated", f, i, reason)
				}
			}
		}
		if gso < 3 {
			t.Errorf("%s: only %d GSO frames captured", f, gso)
		}
	}
}

// TestCaptureSegment: segmenting each captured super-frame gives Linux's
// own segments byte for byte: Ethernet, IP header (length, ID, checksum),
// TCP header (sequence, flags, options, checksum) and payload. No field
// differs, so none is masked: Linux increments the IPv4 ID per segment as
// we do, and copies the TCP options (timestamps) into each segment as we
// do. The same holds for UDP (USO): length, IPv4 ID and checksum.
func TestCaptureSegment(t *testing.T) {
	for _, f := range captureFiles {
		in, out := readCapture(t, f)
		want := linuxSegments(t, out)
		matched, cwr := 0, 0
		var s Segmenter
		buf := make([]byte, 1<<16)
		for i, r := range in {
			l, reason := Validate(&r.hdr, r.frame, allHost)
			if reason != ReasonOK {
				t.Fatalf("%s frame %d: %v", f, i, reason)
			}
			if r.hdr.GSO() == GSONone {
				continue
			}
			if err := s.Reset(&r.hdr, r.frame, l); err != nil {
				t.Fatalf("%s frame %d: reset: %v", f, i, err)
			}
			if r.hdr.GSOType&GSOECN != 0 && r.frame[l.L4Off+13]&tcpCWR != 0 {
				cwr++
			}
			nseg := 0
			for {
				n, err := s.Next(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%s frame %d: next: %v", f, i, err)
				}
				got := buf[:n]
				w, ok := want[keyOf(t, got)]
				if !ok {
					t.Errorf("%s frame %d segment %d: Linux sent no segment %+v", f, i, nseg, keyOf(t, got))
				} else if !bytes.Equal(got, w) {
					t.Errorf("%s frame %d segment %d differs from Linux's: %s", f, i, nseg, diffAt(got, w))
				}
				matched++
				nseg++
			}
			if nseg != s.Segments() || nseg < 2 {
				t.Errorf("%s frame %d: %d segments, Segments() says %d", f, i, nseg, s.Segments())
			}
		}
		nonGSO := 0
		for _, r := range in {
			if r.hdr.GSO() == GSONone {
				nonGSO++
			}
		}
		if matched+nonGSO != len(out) {
			t.Errorf("%s: %d segments + %d single frames, Linux sent %d frames", f, matched, nonGSO, len(out))
		}
		if strings.Contains(f, "ecn") && cwr < 2 {
			t.Errorf("%s: %d super-frames with ECN and CWR", f, cwr)
		}
		t.Logf("%s: %d segments equal to Linux's (%d super-frames with CWR)", f, matched, cwr)
	}
}

// TestCaptureChecksum: completing each captured NEEDS_CSUM single frame
// gives the frame Linux sent after its own checksum completion.
func TestCaptureChecksum(t *testing.T) {
	for _, f := range captureFiles {
		in, out := readCapture(t, f)
		want := linuxSegments(t, out)
		done := 0
		for i, r := range in {
			if r.hdr.GSO() != GSONone || r.hdr.Flags&FlagNeedsCsum == 0 {
				continue
			}
			got := append([]byte(nil), r.frame...)
			if !CompleteChecksum(got, int(r.hdr.CsumStart), int(r.hdr.CsumOffset)) {
				t.Fatalf("%s frame %d: checksum field outside frame", f, i)
			}
			w, ok := want[keyOf(t, got)]
			if !ok {
				t.Fatalf("%s frame %d: no frame of Linux's to compare", f, i)
			}
			if !bytes.Equal(got, w) {
				t.Errorf("%s frame %d: %s", f, i, diffAt(got, w))
			}
			done++
		}
		if want := map[bool]int{true: 1, false: 4}[strings.Contains(f, "udp")]; done < want {
			t.Errorf("%s: only %d NEEDS_CSUM single frames", f, done)
		}
	}
}

// withVLAN returns frame with an 802.1Q tag inserted after the MACs.
func withVLAN(frame []byte, vid uint16) []byte {
	f := make([]byte, 0, len(frame)+4)
	f = append(f, frame[:12]...)
	f = append(f, 0x81, 0x00, byte(vid>>8), byte(vid))
	return append(f, frame[12:]...)
}

// TestCaptureSegmentVLAN: the same super-frames behind a VLAN tag give
// Linux's segments behind the same tag.
func TestCaptureSegmentVLAN(t *testing.T) {
	for _, f := range captureFiles {
		in, out := readCapture(t, f)
		want := linuxSegments(t, out)
		var s Segmenter
		buf := make([]byte, 1<<16)
		segs := 0
		for i, r := range in {
			if r.hdr.GSO() == GSONone {
				continue
			}
			h := r.hdr
			h.HdrLen += 4
			h.CsumStart += 4
			frame := withVLAN(r.frame, 42)
			l, reason := Validate(&h, frame, allHost)
			if reason != ReasonOK {
				t.Fatalf("%s frame %d with VLAN: %v", f, i, reason)
			}
			if err := s.Reset(&h, frame, l); err != nil {
				t.Fatal(err)
			}
			for {
				n, err := s.Next(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got := buf[:n]
				untagged := append(append([]byte(nil), got[:12]...), got[16:]...)
				w := want[keyOf(t, untagged)]
				if !bytes.Equal(got, withVLAN(w, 42)) {
					t.Errorf("%s frame %d: tagged segment differs: %s", f, i, diffAt(got, withVLAN(w, 42)))
				}
				segs++
			}
		}
		if segs == 0 {
			t.Errorf("%s: no segments", f)
		}
	}
}
