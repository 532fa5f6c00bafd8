package vswitch

import (
	"encoding/binary"
	"unsafe"

	"github.com/vhostd/vhostd/switch/offload"
	"github.com/vhostd/vhostd/vhost"
)

// Offloads through the switch. A VM port reads the virtio-net header of
// each frame its guest sends, validates it against the guest's negotiated
// features (offload.Validate) and carries the result beside the frame
// (Frame.Offload). Per destination, transmit asks offload.ForReceiver what
// the receiver can take: the frame passes with the header translated
// (one copy, as any frame), its checksum is completed in software (summed
// from the sender's buffers, patched into the receiver's copy), or it is
// segmented in software into frames of gso_size payload, each delivered
// as a frame of its own. A port that takes no offloads (the uplink) has
// every pending offload completed by a SoftOffload before it sees the
// frames.
//
// The loops of vmport.go call in here at a few points only; nothing on
// the path of a plain frame costs more than a byte compare.

// maxOffloadFrame is the longest frame with an offload: a GSO frame ends
// where its IP length says (at most 65535 bytes of IPv6 payload behind a
// 40-byte IPv6 header and a VLAN-tagged Ethernet header), and a partial
// checksum is only accepted on a frame no longer.
const maxOffloadFrame = 18 + 40 + 65535

// gsoPeek is how many bytes of a GSO frame are gathered for validation:
// its headers must fit (frames with longer headers are refused as
// l4_unsupported).
const gsoPeek = 512

// rxOffload is a receive lane's scratch for the headers of one burst.
type rxOffload struct {
	// hdrs points at each frame's virtio-net header as the guest wrote
	// it (hdrLen bytes): a bare pointer, not a slice, since all that a
	// plain frame costs is its store here and one 2-byte load.
	hdrs   [BurstSize]*byte
	hdrLen int
	split  [BurstSize][12]byte // a header split over descriptors, gathered
	// frame is where a GSO frame's headers are gathered for Validate:
	// maxOffloadFrame long, so that a slice of the frame's length fits.
	frame []byte
}

func newRxOffload() *rxOffload { return &rxOffload{frame: make([]byte, maxOffloadFrame)} }

// keep notes where frame n's header is: segs (the chain's readable
// segments) start with at least hdrLen bytes of it.
func (x *rxOffload) keep(n int, segs [][]byte, hdrLen int) {
	if s := segs[0]; len(s) >= hdrLen {
		x.hdrs[n] = &s[0]
		return
	}
	Gather(x.split[n][:hdrLen], segs)
	x.hdrs[n] = &x.split[n][0]
}

// flagsGSO returns the first two bytes of frame n's header (flags and
// gso_type): 0 for a frame that asks for nothing.
func (x *rxOffload) flagsGSO(n int) uint16 { return *(*uint16)(unsafe.Pointer(x.hdrs[n])) }

// header returns frame n's header.
func (x *rxOffload) header(n int) []byte { return unsafe.Slice(x.hdrs[n], x.hdrLen) }

// offloads validates the headers of frames [start, n) of b, sets each
// frame's Offload, drops (and counts on l) those refused, and returns
// the frames kept, moved down to close the gaps. Frames before start
// are the port's own announcements (rarp.go), complete. The header is
// in guest memory and may have changed since the receive loop let a
// frame longer than limit through as GSO: a frame that is not GSO by
// what is validated here is held to the MTU again.
func (l *vmLane) offloads(b *Burst, start, n int, r *vhost.Rings, limit int) int {
	x := l.rxo
	for i := start; i < n; i++ {
		if x.flagsGSO(i) != 0 || b.Frames[i].Len > limit {
			x.hdrLen = r.HdrLen
			return l.offloadsFrom(b, i, n, offload.Features(r.Features), limit)
		}
		b.Frames[i].Offload = offload.Meta{}
	}
	return n
}

// offloadsFrom is offloads from frame i on, the first with an offload
// or longer than limit.
func (l *vmLane) offloadsFrom(b *Burst, i, n int, features offload.Features, limit int) int {
	x := l.rxo
	k := i
	for ; i < n; i++ {
		f := &b.Frames[i]
		if x.flagsGSO(i) != 0 {
			m, r := x.validate(x.header(i), f, features)
			if r != offload.ReasonOK {
				if r == reasonTooLong {
					l.counters.Drops[DropMTUExceeded].addOwned(1)
				} else {
					l.counters.Drops[dropOffload(r)].addOwned(1)
				}
				continue
			}
			f.Offload = m
		} else {
			f.Offload = offload.Meta{}
		}
		if f.Len > limit && !f.Offload.GSO() && overMTU(f.Segs, f.Len, limit) {
			l.counters.Drops[DropMTUExceeded].addOwned(1)
			continue
		}
		if k != i {
			b.Frames[k] = *f
		}
		k++
	}
	return k
}

// reasonTooLong marks a frame with an offload that is longer than any
// frame with an offload may be: counted as mtu_exceeded.
const reasonTooLong = offload.Reason(255)

// validate decodes and checks the header h of frame f.
func (x *rxOffload) validate(h []byte, f *Frame, feat offload.Features) (offload.Meta, offload.Reason) {
	var hd offload.Header
	if !hd.Decode(h) {
		return offload.Meta{}, offload.ReasonHeaderShort
	}
	if f.Len > len(x.frame) {
		return offload.Meta{}, reasonTooLong
	}
	frame := x.frame[:f.Len]
	got := f.Len
	if hd.GSOType != offload.GSONone {
		// Only the headers are read: gather those. Without GSO,
		// Validate reads nothing of the frame but its length.
		got = Gather(x.frame[:min(f.Len, gsoPeek)], f.Segs)
	}
	lay, r := offload.Validate(&hd, frame, feat)
	if r != offload.ReasonOK {
		return offload.Meta{}, r
	}
	if hd.GSO() != offload.GSONone && lay.Payload > got {
		return offload.Meta{}, offload.ReasonL4Unsupported
	}
	return offload.MetaOf(&hd, lay), offload.ReasonOK
}

// rxOffloads returns the offloads a guest takes in its receive queues: the
// GUEST_* features it negotiated, but no GSO without mergeable buffers. A
// driver without them posts chains of page-sized buffers for GSO frames
// (Linux: 19 for 64 KiB), more segments than transmit uses of a chain
// (rxChainSegs): such a receiver gets the segments.
func rxOffloads(r *vhost.Rings) offload.Features {
	f := offload.Features(r.Features)
	if !r.MrgRxbuf {
		f &^= offload.FeatureGuestTSO4 | offload.FeatureGuestTSO6 | offload.FeatureGuestECN | offload.FeatureGuestUFO |
			offload.FeatureGuestUSO4 | offload.FeatureGuestUSO6
	}
	return f
}

// What the transmit loop does to a frame of a chunk once it is copied.
const (
	txPlain    = iota // nothing: a zero header is right
	txHeader          // write the translated header (an offload passed on)
	txComplete        // complete the checksum in the copy
	txSegment         // a software segment: write its header if any
)

// SoftOffload completes in software what frames left for the receiver
// to do, for a receiver with the given offload features (none, for a
// port that takes no offloads, such as the uplink). It hands its caller's
// transmit loop chunks of at most BurstSize frames: the frames as they
// are where the receiver takes them, and in place of those it must not
// see, their segments or checksummed copies (linear mode) in its own
// buffers. Nothing is allocated after NewSoftOffload. Not safe for
// concurrent use: one per transmit queue, used under its lock.
type SoftOffload struct {
	active bool
	// linear: complete checksums into a copy (for a port that copies the
	// frames it gets, the uplink); else leave it to the transmit loop's
	// fixup, which patches the receiver's copy.
	linear bool
	feat   offload.Features
	src    []*Frame // frames not yet looked at
	chunk  []*Frame // the chunk handed out last
	out    [BurstSize]*Frame
	act    [BurstSize]uint8
	hdr    [BurstSize]offload.Header

	seg     offload.Segmenter
	segging bool           // seg has segments left
	segHdr  offload.Header // the header each segment gets
	lin     []byte         // the frame being segmented (or completed), gathered
	arena   []byte         // segments and completed copies of the chunk
	soft    [BurstSize]Frame
	softSeg [BurstSize][1][]byte

	// Counts since the last Count.
	passed, segmented, segments, csum, dropped, changed uint64
	// peek holds the headers of a passed GSO frame's copy (copyHolds):
	// maxOffloadFrame long, so that a slice of the frame's length fits.
	peek []byte
}

// NewSoftOffload returns a SoftOffload. With linear, checksums are
// completed into copies the chunks carry; else the caller patches its own
// copy (see fixup).
func NewSoftOffload(linear bool) *SoftOffload {
	x := &SoftOffload{linear: linear, lin: make([]byte, maxOffloadFrame), arena: make([]byte, maxOffloadFrame)}
	if !linear {
		x.peek = make([]byte, maxOffloadFrame)
	}
	return x
}

// Begin starts a transmit of frames to a receiver with the (GUEST_*)
// features feat and returns the first chunk. When every frame is
// complete, that is frames itself and Next returns nothing more. A Begin
// abandons whatever an earlier transmit left (one cut short by a fault).
func (x *SoftOffload) Begin(frames []*Frame, feat offload.Features) []*Frame {
	x.active, x.segging = false, false
	for _, f := range frames {
		if !f.Offload.Plain() {
			x.active, x.feat, x.src = true, feat, frames
			return x.fill()
		}
	}
	return frames
}

// Next returns frames while the caller has not finished the chunk, and
// then the next chunk, empty at the end.
func (x *SoftOffload) Next(frames []*Frame) []*Frame {
	if len(frames) > 0 || !x.active {
		return frames
	}
	return x.fill()
}

// index returns the chunk index of frames[i], frames being what is left
// of the chunk.
func (x *SoftOffload) index(frames []*Frame, i int) int { return len(x.chunk) - len(frames) + i }

// fill makes the next chunk.
func (x *SoftOffload) fill() []*Frame {
	k, used := 0, 0
	for k < BurstSize {
		if x.segging {
			if len(x.arena)-used < x.seg.MaxSegmentLen() {
				break // the chunk's buffer is full: the next chunk goes on
			}
			n, err := x.seg.Next(x.arena[used:])
			if err != nil { // io.EOF; ErrShortBuffer cannot happen (checked above)
				x.segging = false
				continue
			}
			x.put(k, x.arena[used:used+n], x.segHdr, txSegment)
			used += n
			k++
			continue
		}
		if len(x.src) == 0 {
			break
		}
		f := x.src[0]
		if f.Offload.Plain() {
			x.out[k], x.act[k] = f, txPlain
			x.src = x.src[1:]
			k++
			continue
		}
		h := f.Offload.Header()
		lay := f.Offload.Layout(f.Len)
		rh, act := offload.ForReceiver(&h, lay, x.feat)
		switch act {
		case offload.ActionPass:
			x.out[k], x.act[k], x.hdr[k] = f, txHeader, rh
			k++
		case offload.ActionComplete:
			if !x.linear {
				x.out[k], x.act[k] = f, txComplete
				k++
				break
			}
			if f.Len > len(x.arena)-used {
				if k > 0 {
					return x.done(k) // next chunk, with the whole buffer
				}
				x.dropped++
				break
			}
			buf := x.arena[used : used+f.Len]
			Gather(buf, f.Segs)
			offload.CompleteChecksum(buf, int(h.CsumStart), int(h.CsumOffset))
			x.put(k, buf, offload.Header{}, txPlain)
			x.csum++
			used += f.Len
			k++
		case offload.ActionSegment:
			if f.Len > len(x.lin) {
				x.dropped++
				break
			}
			frame := x.lin[:f.Len]
			Gather(frame, f.Segs)
			// Reset checks the layout against what it relies on: the
			// guest may have changed its buffer since Validate.
			if x.seg.Reset(&h, frame, lay) != nil {
				x.dropped++
				break
			}
			x.segging, x.segHdr = true, rh
			x.segmented++
		default: // ActionDrop
			x.dropped++
		}
		x.src = x.src[1:]
	}
	return x.done(k)
}

func (x *SoftOffload) done(k int) []*Frame {
	x.chunk = x.out[:k]
	if k == 0 {
		x.active = false
	}
	return x.chunk
}

// put makes chunk entry k a frame of its own over b.
func (x *SoftOffload) put(k int, b []byte, h offload.Header, act uint8) {
	s := &x.soft[k]
	x.softSeg[k][0] = b
	s.Segs, s.Len, s.Offload = x.softSeg[k][:], len(b), offload.Meta{}
	x.out[k], x.act[k], x.hdr[k] = s, act, h
	if act == txSegment {
		x.segments++
	}
}

// Count adds the offloads done since the last Count to c, whose writer
// the caller is.
func (x *SoftOffload) Count(c *Counters) {
	if x.passed|x.segmented|x.csum|x.dropped|x.changed == 0 {
		return
	}
	c.GSOPassed.addOwned(x.passed)
	c.GSOSegmented.addOwned(x.segmented)
	c.GSOSegments.addOwned(x.segments)
	c.CsumCompleted.addOwned(x.csum)
	c.GSOChanged.addOwned(x.changed)
	if x.dropped > 0 {
		c.Drops[DropTxOffload].addOwned(x.dropped)
	}
	x.passed, x.segmented, x.segments, x.csum, x.dropped, x.changed = 0, 0, 0, 0, 0, 0
}

// finish finishes frames[i], just copied by copyInto into the chains of p
// after a header of hdrLen bytes, if it has an offload: small enough to be
// inlined, so a plain burst pays one branch per frame.
func (t *txQueue) finish(frames []*Frame, i int, p rxPlan, hdrLen int) {
	if t.ox.active {
		t.fixup(t.ox.index(frames, i), p, hdrLen)
	}
}

// fixup finishes frame j of the chunk once it is copied: it completes the
// checksum in the copy, or counts the offload passed on (whose header
// headerFirst wrote).
func (t *txQueue) fixup(j int, p rxPlan, hdrLen int) {
	x := t.ox
	switch x.act[j] {
	case txComplete:
		f := x.out[j]
		h := &f.Offload
		v, ok := offload.ChecksumSegs(f.Segs, int(h.CsumStart))
		if !ok {
			return
		}
		var b [2]byte
		binary.LittleEndian.PutUint16(b[:], v)
		writeAt(t.writable(p), hdrLen+int(h.CsumStart)+int(h.CsumOffset), b[:])
		x.csum++
	case txHeader:
		// Written before the copy, by headerFirst. A GSO request is
		// passed on only if the receiver's copy holds the headers that
		// were validated: the frame was copied from the sender's
		// buffer, which the sender may have rewritten since, and the
		// receiver's stack trusts the request. Otherwise the frame goes
		// without it, as a plain frame (which a receiver checks).
		if x.hdr[j].GSOType != offload.GSONone {
			if !t.copyHolds(x.out[j], p, hdrLen) {
				var b [offload.HeaderLen]byte
				h := offload.Header{NumBuffers: uint16(p.k)}
				h.Encode(b[:hdrLen])
				writeAt(t.writable(p), 0, b[:hdrLen])
				x.changed++
				return
			}
			x.passed++
		}
	}
}

// copyHolds reports whether the copy of GSO frame f in the chains of p
// (after their hdrLen-byte virtio-net header) parses to the layout f was
// validated with.
func (t *txQueue) copyHolds(f *Frame, p rxPlan, hdrLen int) bool {
	x := t.ox
	n := gatherAt(x.peek[:min(f.Len, gsoPeek)], t.writable(p), hdrLen)
	l, r := offload.Parse(x.peek[:f.Len])
	return r == offload.ReasonOK && l == f.Offload.Layout(f.Len) && l.Payload <= n
}

// gatherAt copies the bytes of segs from offset off on into out and
// returns how many it copied.
func gatherAt(out []byte, segs [][]byte, off int) int {
	n := 0
	for _, s := range segs {
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(out[n:], s[off:])
		off = 0
		if n == len(out) {
			break
		}
	}
	return n
}

// headerFirst writes the header of frames[i] into the chains of p before
// the copy when the frame has one to pass on (an offload the receiver
// takes, or a software segment's), and reports whether it did; a frame
// without one gets copyInto's zero header. Small enough to be inlined: a
// plain burst pays one branch per frame.
func (t *txQueue) headerFirst(frames []*Frame, i int, p rxPlan, hdrLen int) bool {
	return t.ox.active && t.offloadHeader(t.ox.index(frames, i), p, hdrLen)
}

// offloadHeader writes chunk frame j's header, with num_buffers, at the
// start of the chains of p, storing only the words that differ from what
// the buffer holds: a driver recycles its buffers, and a flow's segments
// carry the same header, so the line mostly stays shared with the driver
// (as putNetHeader's zero headers do) instead of coming over to this CPU
// and back for every 64 KiB segment.
func (t *txQueue) offloadHeader(j int, p rxPlan, hdrLen int) bool {
	x := t.ox
	if act := x.act[j]; act != txHeader && act != txSegment || x.hdr[j] == (offload.Header{}) {
		return false
	}
	h := x.hdr[j]
	h.NumBuffers = uint16(p.k)
	var b [offload.HeaderLen]byte
	h.Encode(b[:hdrLen])
	// The first chain's first writable segment, if it holds the whole
	// header (a guest may have put a chain without one first: then, and
	// for a header split across segments, writeAt).
	if c := &t.rx[p.first]; c.NRead < len(c.Segs) && len(c.Segs[c.NRead]) >= hdrLen {
		storeHeader(c.Segs[c.NRead], hdrLen, binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint16(b[8:]))
		return true
	}
	writeAt(t.writable(p), 0, b[:hdrLen])
	return true
}

// writeAt copies b into dst at offset off, across segments.
func writeAt(dst [][]byte, off int, b []byte) {
	for _, d := range dst {
		if off >= len(d) {
			off -= len(d)
			continue
		}
		n := copy(d[off:], b)
		b = b[n:]
		off = 0
		if len(b) == 0 {
			return
		}
	}
}
