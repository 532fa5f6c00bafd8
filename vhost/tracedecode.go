package vhost

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// The trace decodes payloads field by field as the specification lays
// them out (vhost-user.rst, "Message specification"). It runs before the
// request is validated, so every read checks the payload's length: a
// short payload shows what there is and says it is short.

func hex(v uint64) string { return "0x" + strconv.FormatUint(v, 16) }
func dec(v uint64) string { return strconv.FormatUint(v, 10) }

func featureList(v uint64, names func(uint64) []string) string {
	if v == 0 {
		return hex(v)
	}
	return hex(v) + " (" + strings.Join(names(v), ",") + ")"
}

// statusNames are the device status bits (virtio 1.2, 2.1).
var statusNames = []struct {
	bit  uint64
	name string
}{{1, "ACKNOWLEDGE"}, {2, "DRIVER"}, {4, "DRIVER_OK"}, {8, "FEATURES_OK"}, {64, "DEVICE_NEEDS_RESET"}, {128, "FAILED"}}

func statusList(v uint64) string {
	var out []string
	for _, s := range statusNames {
		if v&s.bit != 0 {
			out = append(out, s.name)
		}
	}
	if len(out) == 0 {
		return hex(v) + " (reset)"
	}
	return hex(v) + " (" + strings.Join(out, ",") + ")"
}

// payload reads little-endian fields of p, noting a short payload once.
type payload struct {
	p     []byte
	out   Fields
	short bool
}

func (r *payload) add(name, value string) { r.out = append(r.out, Field{name, value}) }

func (r *payload) u64(off int) (uint64, bool) {
	if off+8 > len(r.p) {
		r.short = true
		return 0, false
	}
	return binary.LittleEndian.Uint64(r.p[off:]), true
}

func (r *payload) u32(off int) (uint32, bool) {
	if off+4 > len(r.p) {
		r.short = true
		return 0, false
	}
	return binary.LittleEndian.Uint32(r.p[off:]), true
}

func (r *payload) u16(off int) (uint16, bool) {
	if off+2 > len(r.p) {
		r.short = true
		return 0, false
	}
	return binary.LittleEndian.Uint16(r.p[off:]), true
}

func (r *payload) fields() Fields {
	if r.short {
		r.add("payload", fmt.Sprintf("short: %d bytes", len(r.p)))
	}
	return r.out
}

// region decodes a memory region (gpa, size, uaddr, offset) at off,
// names prefixed with prefix.
func (r *payload) region(off int, prefix string) {
	gpa, ok1 := r.u64(off)
	size, ok2 := r.u64(off + 8)
	ua, ok3 := r.u64(off + 16)
	mo, ok4 := r.u64(off + 24)
	if ok1 && ok2 && ok3 && ok4 {
		r.add(prefix+"gpa", hex(gpa))
		r.add(prefix+"size", fmt.Sprintf("%s (%s)", hex(size), sizeText(size)))
		r.add(prefix+"uaddr", hex(ua))
		r.add(prefix+"mmap_offset", hex(mo))
	}
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return dec(n>>30) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return dec(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return dec(n>>10) + " KiB"
	}
	return dec(n) + " B"
}

// where says where a frontend address lands in guest memory: its
// guest-physical address and region, or that no region covers it.
func where(mem *guestmem.Memory, uaddr uint64) string {
	if mem == nil {
		return "no memory table yet"
	}
	gpa, err := mem.UserToGuest(uaddr, 1)
	if err != nil {
		return "not in any region"
	}
	for i, s := range mem.Regions() {
		if gpa >= s.GuestPhysAddr && gpa-s.GuestPhysAddr < s.Size {
			return fmt.Sprintf("gpa %s, region %d", hex(gpa), i)
		}
	}
	return "gpa " + hex(gpa)
}

// decodeRequest decodes m's payload. mem, the device's memory table, if
// any, translates ring addresses; packed says the frontend acked
// VIRTIO_F_RING_PACKED, which changes what ring addresses and bases mean.
func decodeRequest(m *Message, mem *guestmem.Memory, packed bool) Fields {
	r := &payload{p: m.Payload}
	switch m.Request {
	case SetFeatures:
		if v, ok := r.u64(0); ok {
			r.add("features", featureList(v, FeatureNames))
		}
	case SetProtocolFeatures:
		if v, ok := r.u64(0); ok {
			r.add("protocol_features", featureList(v, ProtocolFeatureNames))
		}
	case SetMemTable:
		n, ok := r.u32(0)
		if !ok {
			break
		}
		r.add("regions", dec(uint64(n)))
		for i := 0; i < int(min(n, maxFDs)); i++ {
			if 8+32*(i+1) > len(r.p) {
				r.short = true
				break
			}
			r.region(8+32*i, fmt.Sprintf("r%d.", i))
		}
	case AddMemReg, RemMemReg:
		r.region(8, "")
	case SetVringNum, SetVringBase, GetVringBase:
		idx, ok1 := r.u32(0)
		num, ok2 := r.u32(4)
		if ok1 && ok2 {
			r.add("index", dec(uint64(idx)))
			name := "num"
			if m.Request != SetVringNum {
				name = "base"
			}
			r.add(name, dec(uint64(num)))
			if packed && m.Request != SetVringNum {
				// virtqueue.PackedBase: avail position and wrap
				// counter, then QEMU's used ones.
				r.add("avail_idx", dec(uint64(num&0x7fff)))
				r.add("avail_wrap", dec(uint64(num>>15&1)))
				if num>>16 != 0 {
					r.add("used_idx", dec(uint64(num>>16&0x7fff)))
					r.add("used_wrap", dec(uint64(num>>31)))
				}
			}
		}
	case SetVringEnable:
		idx, ok1 := r.u32(0)
		num, ok2 := r.u32(4)
		if ok1 && ok2 {
			r.add("index", dec(uint64(idx)))
			r.add("enable", dec(uint64(num)))
		}
	case SetVringAddr:
		if len(r.p) < 40 {
			r.short = true
			break
		}
		a := m.vringAddr()
		r.add("index", dec(uint64(a.Index)))
		flags := hex(uint64(a.Flags))
		if a.Flags&1 != 0 {
			flags += " (LOG)"
		}
		r.add("flags", flags)
		r.add("desc", fmt.Sprintf("%s (%s)", hex(a.Desc), where(mem, a.Desc)))
		if packed {
			// The same three fields name a packed ring's parts.
			r.add("device_area", fmt.Sprintf("%s (%s)", hex(a.Used), where(mem, a.Used)))
			r.add("driver_area", fmt.Sprintf("%s (%s)", hex(a.Avail), where(mem, a.Avail)))
		} else {
			r.add("used", fmt.Sprintf("%s (%s)", hex(a.Used), where(mem, a.Used)))
			r.add("avail", fmt.Sprintf("%s (%s)", hex(a.Avail), where(mem, a.Avail)))
		}
		r.add("log", hex(a.Log))
	case SetVringKick, SetVringCall, SetVringErr:
		if v, ok := r.u64(0); ok {
			r.add("index", dec(v&vringIdxMask))
			if v&vringNoFD != 0 {
				r.add("fd", "none (polling)")
			}
			if rest := v &^ (vringIdxMask | vringNoFD); rest != 0 {
				r.add("unknown_bits", hex(rest))
			}
		}
	case SetLogBase:
		size, ok1 := r.u64(0)
		off, ok2 := r.u64(8)
		if ok1 && ok2 {
			r.add("mmap_size", fmt.Sprintf("%s (%s)", hex(size), sizeText(size)))
			r.add("mmap_offset", hex(off))
		}
	case SendRARP:
		if len(r.p) >= 6 {
			r.add("mac", fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", r.p[0], r.p[1], r.p[2], r.p[3], r.p[4], r.p[5]))
		} else {
			r.short = true
		}
	case NetSetMTU:
		if v, ok := r.u64(0); ok {
			r.add("mtu", dec(v))
		}
	case SetStatus:
		if v, ok := r.u64(0); ok {
			r.add("status", statusList(v))
		}
	case GetConfig, SetConfig:
		off, ok1 := r.u32(0)
		size, ok2 := r.u32(4)
		flags, ok3 := r.u32(8)
		if ok1 && ok2 && ok3 {
			r.add("offset", dec(uint64(off)))
			r.add("size", dec(uint64(size)))
			r.add("flags", hex(uint64(flags)))
		}
	case GetInflightFD, SetInflightFD:
		size, ok1 := r.u64(0)
		off, ok2 := r.u64(8)
		nq, ok3 := r.u16(16)
		qs, ok4 := r.u16(18)
		if ok1 && ok2 && ok3 && ok4 {
			r.add("mmap_size", hex(size))
			r.add("mmap_offset", hex(off))
			r.add("num_queues", dec(uint64(nq)))
			r.add("queue_size", dec(uint64(qs)))
		}
	default:
		if len(r.p) > 0 {
			n := min(len(r.p), 32)
			r.add("bytes", fmt.Sprintf("% x", r.p[:n]))
		}
	}
	return r.fields()
}

// decodeReply decodes the payload of vhostd's reply to req.
func decodeReply(req Request, p []byte, ack, packed bool) Fields {
	r := &payload{p: p}
	if ack {
		if v, ok := r.u64(0); ok {
			r.add("ack", dec(v))
		}
		return r.fields()
	}
	switch req {
	case GetFeatures:
		if v, ok := r.u64(0); ok {
			r.add("features", featureList(v, FeatureNames))
		}
	case GetProtocolFeatures:
		if v, ok := r.u64(0); ok {
			r.add("protocol_features", featureList(v, ProtocolFeatureNames))
		}
	case GetQueueNum:
		if v, ok := r.u64(0); ok {
			r.add("queues", dec(v))
		}
	case GetMaxMemSlots:
		if v, ok := r.u64(0); ok {
			r.add("slots", dec(v))
		}
	case GetStatus:
		if v, ok := r.u64(0); ok {
			r.add("status", statusList(v))
		}
	case GetVringBase, GetInflightFD, GetConfig:
		return decodeRequest(&Message{Header: Header{Request: req}, Payload: p}, nil, packed)
	default:
		if len(p) > 0 {
			r.add("bytes", fmt.Sprintf("% x", p[:min(len(p), 32)]))
		}
	}
	return r.fields()
}
