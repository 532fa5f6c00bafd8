package vhost

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
)

// TestTraceDecodesPackedRings: with RING_PACKED acked, the trace names
// SET_VRING_ADDR's fields for the packed ring's parts and splits a ring
// base into positions and wrap counters, in requests and replies.
func TestTraceDecodesPackedRings(t *testing.T) {
	addr := make([]byte, 40)
	binary.LittleEndian.PutUint64(addr[8:], 0x1000)
	binary.LittleEndian.PutUint64(addr[16:], 0x2000)
	binary.LittleEndian.PutUint64(addr[24:], 0x3000)
	text := func(fs Fields) string {
		var b strings.Builder
		for _, f := range fs {
			b.WriteString(f.Name + "=" + f.Value + " ")
		}
		return b.String()
	}
	got := text(decodeRequest(&Message{Header: Header{Request: SetVringAddr}, Payload: addr}, nil, true))
	for _, want := range []string{"desc=0x1000", "device_area=0x2000", "driver_area=0x3000"} {
		if !strings.Contains(got, want) {
			t.Errorf("packed SET_VRING_ADDR decoded as %q, lacks %q", got, want)
		}
	}
	if got := text(decodeRequest(&Message{Header: Header{Request: SetVringAddr}, Payload: addr}, nil, false)); !strings.Contains(got, "used=0x2000") {
		t.Errorf("split SET_VRING_ADDR decoded as %q", got)
	}
	st := make([]byte, 8)
	binary.LittleEndian.PutUint32(st[4:], virtqueue.PackedBase(5, false, 3, true))
	got = text(decodeReply(GetVringBase, st, false, true))
	for _, want := range []string{"avail_idx=5 ", "avail_wrap=0 ", "used_idx=3 ", "used_wrap=1 "} {
		if !strings.Contains(got, want) {
			t.Errorf("packed GET_VRING_BASE reply decoded as %q, lacks %q", got, want)
		}
	}
}
