package vhost_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// collect reads sub until an event of kind last arrives (or 5s pass).
func collect(t *testing.T, sub *vhost.TraceSub, last string) []vhost.TraceEvent {
	t.Helper()
	var evs []vhost.TraceEvent
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-sub.C:
			evs = append(evs, e)
			if e.Kind == last {
				return evs
			}
		case <-timeout:
			t.Fatalf("no %s event within 5s; got %d events", last, len(evs))
		}
	}
}

func field(e vhost.TraceEvent, name string) string {
	for _, f := range e.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// line is an event in one line, for matching and failure messages.
func line(e vhost.TraceEvent) string {
	s := e.Kind
	if e.Request != "" {
		s += " " + e.Request
	}
	if len(e.Flags) > 0 {
		s += " [" + strings.Join(e.Flags, ",") + "]"
	}
	if len(e.Fields) > 0 {
		s += " " + e.Fields.String()
	}
	if len(e.FDs) > 0 {
		s += " fds=" + strings.Join(e.FDs, ",")
	}
	if e.Error != "" {
		s += " error=" + e.Error
	}
	return s
}

// A subscriber sees a handshake decoded, in order, with a refused
// request, a request vhostd does not know, their NACKs, and the end of
// the connection.
func TestTraceHandshake(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	sub := s.Trace()
	defer sub.Close()
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol|fEventIdx, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if err := f.MapMemory(32<<20, 0x100000, 0x7f0000000000); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	r, err := f.SetupRing(0, 256, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A started ring's size cannot change: refused, the connection stays.
	if v, err := f.SendAck(vt.SetVringNum, vt.RingState(0, 512)); err != nil || v == 0 {
		t.Fatalf("SET_VRING_NUM on a started ring: ack %d, %v; want a NACK", v, err)
	}
	// Unknown: NACKed, and the connection ends.
	f.Send(999, vt.FlagVersion|vt.FlagNeedReply, []byte{1, 2, 3})
	evs := collect(t, sub, vhost.TraceDisconnect)
	var lines []string
	for _, e := range evs {
		lines = append(lines, line(e))
	}
	all := strings.Join(lines, "\n")
	want := []string{
		"connect",
		"request GET_FEATURES",
		"reply GET_FEATURES [REPLY] features=0x",
		"request SET_PROTOCOL_FEATURES",
		"request SET_OWNER",
		"request SET_FEATURES features=0x",
		"request SET_MEM_TABLE [NEED_REPLY] regions=1 r0.gpa=0x100000 r0.size=0x2000000 (32 MiB) r0.uaddr=0x7f0000000000 r0.mmap_offset=0x0 fds=memfd",
		"reply SET_MEM_TABLE [REPLY] ack=0",
		"request SET_VRING_NUM index=0 num=256",
		"request SET_VRING_ADDR index=0 flags=0x0 desc=0x7f0000001000 (gpa 0x101000, region 0) used=0x7f0000030000 (gpa 0x130000, region 0)",
		"request SET_VRING_KICK index=0 fds=eventfd",
		"request SET_VRING_CALL index=0 fds=eventfd",
		"request SET_VRING_ENABLE index=0 enable=1",
		"ring ring=0 from=started to=running",
		"request SET_VRING_NUM [NEED_REPLY] index=0 num=512",
		"nack SET_VRING_NUM [REPLY] ack=1",
		"refused SET_VRING_NUM error=",
		"request request 999 [NEED_REPLY] bytes=01 02 03",
		"nack request 999 [REPLY] ack=1",
		"error request 999 error=request 999 (999): not implemented by vhostd",
		"ring ring=0 from=running to=unset",
		"disconnect error=request 999 (999): not implemented by vhostd",
	}
	// In this order, each a prefix of some line after the previous one.
	i := 0
	for _, w := range want {
		for i < len(lines) && !strings.HasPrefix(lines[i], w) {
			i++
		}
		if i == len(lines) {
			t.Fatalf("no %q (in order) in the trace:\n%s", w, all)
		}
		i++
	}
	for _, e := range evs {
		if e.Request == "GET_FEATURES" && e.Kind == vhost.TraceReply && !strings.Contains(field(e, "features"), "version_1") {
			t.Errorf("GET_FEATURES reply not decoded by name: %s", line(e))
		}
	}
	for j := 1; j < len(evs); j++ {
		if evs[j].Seq != evs[j-1].Seq+1 || evs[j].Time.Before(evs[j-1].Time) {
			t.Fatalf("events out of order or missing: %d at %v after %d at %v", evs[j].Seq, evs[j].Time, evs[j-1].Seq, evs[j-1].Time)
		}
	}
	if sub.Lost() != 0 {
		t.Errorf("%d events lost", sub.Lost())
	}
}

// A subscriber that never reads does not slow or block the connection:
// its events beyond the buffer are dropped and counted.
func TestTraceSlowReader(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	stuck := s.Trace() // never read
	defer stuck.Close()
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	const n = 3000 // each: a request and its reply, 2 events
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := f.GetU64(vt.GetFeatures); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	took := time.Since(start)
	if stuck.Lost() == 0 {
		t.Fatalf("a subscriber that never reads lost no events out of %d", 2*n)
	}
	if got := len(stuck.C) + int(stuck.Lost()); got < 2*n {
		t.Errorf("queued %d + lost %d < %d events", len(stuck.C), stuck.Lost(), 2*n)
	}
	t.Logf("%d requests in %v with a stuck subscriber; %d events queued, %d lost", n, took, len(stuck.C), stuck.Lost())
	// A subscriber that reads gets what happens after it subscribed.
	live := s.Trace()
	defer live.Close()
	f.GetU64(vt.GetFeatures)
	evs := collect(t, live, vhost.TraceReply)
	if evs[0].Request != "GET_FEATURES" || evs[0].Lost != 0 {
		t.Errorf("live subscriber: %s (lost %d)", line(evs[0]), evs[0].Lost)
	}
}

// Close ends a subscription: its channel is closed, and the connection
// goes on without it.
func TestTraceSubscriptionClose(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	sub := s.Trace()
	sub.Close()
	sub.Close() // twice is fine
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("closed subscription delivered an event")
	}
}

// A data-path violation shows in the trace once the control path notices
// it (at the connection's next request), again only when its count grows.
func TestTraceViolation(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	sub := s.Trace()
	defer sub.Close()
	f := dial(t, path)
	f.NoEnable = true
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if err := f.MapMemory(64<<20, 0x100000, 0x7f0000000000); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(false); err != nil {
		t.Fatal(err)
	}
	tx, err := f.SetupRing(1, 256, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	tx.KickNow()
	tx.KickNow()
	if _, err := f.GetU64(vt.GetFeatures); err != nil { // noticed here
		t.Fatal(err)
	}
	evs := collect(t, sub, vhost.TraceViolation)
	e := evs[len(evs)-1]
	if field(e, "ring") != "1" || field(e, "kind") != "kick_while_disabled" || field(e, "count") != "2" ||
		!strings.Contains(field(e, "spec"), "3.1.1") || !strings.Contains(field(e, "what"), "kicked 2 times") {
		t.Errorf("violation event: %s", line(e))
	}
	// Nothing new: no event; one more kick: count 3.
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	tx.KickNow()
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	evs = collect(t, sub, vhost.TraceViolation)
	for _, e := range evs[:len(evs)-1] {
		if e.Kind == vhost.TraceViolation {
			t.Errorf("violation traced again with no new count: %s", line(e))
		}
	}
	if e := evs[len(evs)-1]; field(e, "count") != "3" {
		t.Errorf("after one more kick: %s", line(e))
	}
}
