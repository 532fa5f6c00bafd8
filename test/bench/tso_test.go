package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseTSOGen(t *testing.T) {
	g, err := ParseTSOGen([]byte(`{"tx_tso":true,"rx_lro":true,"window_s":2,"gbps":60.5,"whole_gso":10,"segmented":3,"verified":4,"csum_partial":3,"csum_full":1,"bad":0}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g.Gbps != 60.5 || !g.TxTSO || g.WholeGSO != 10 {
		t.Errorf("parsed %+v", g)
	}
	if d := g.Delivery(); d != "whole+GSO 10, segmented 3" {
		t.Errorf("Delivery %q", d)
	}
	if c := g.Csum(); c != "partial 3, full 1" {
		t.Errorf("Csum %q", c)
	}
	if d := (TSOGen{}).Delivery(); d != "nothing" {
		t.Errorf("empty Delivery %q", d)
	}
	if _, err := ParseTSOGen([]byte("EAL: error\n")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestBuildTSORows(t *testing.T) {
	ok := func(b string, rep int, gbps float64) TSORep {
		return TSORep{Backend: b, Rep: rep, Gen: TSOGen{Gbps: gbps, WholeGSO: 1}, BackendDrops: 0}
	}
	reps := []TSORep{
		ok("vhostd", 1, 60), ok("vhostd", 2, 70), ok("vhostd", 3, 65),
		ok(RefDPDK, 1, 20), ok(RefDPDK, 2, 40), ok(RefDPDK, 3, 30),
		{Backend: RefOVS, Rep: 1, Gen: TSOGen{Refused: "the backend does not offer port A: no HOST_TSO4/6"}, BackendDrops: -1},
		{Backend: "dpdk-io-legacy-ol", Rep: 1, Err: errors.New("boom\nmore"), BackendDrops: -1},
	}
	mems := []MemcpyRep{{Rep: 1, Ring: 80, Hot: 200, Pool: 60, RingBuiltin: 70, RingString: 80}, {Rep: 2, Ring: 100, Hot: 300, Pool: 70, RingBuiltin: 100, RingString: 90}, {Rep: 3, Err: errors.New("x")}}
	rows := BuildTSORows(reps, mems, []string{"vhostd", RefDPDK, "dpdk-io-legacy-ol", RefOVS})
	v := rows[0]
	if v.Gbps.Median != 65 || v.Gbps.N != 3 {
		t.Fatalf("vhostd %+v", v.Gbps)
	}
	if math.Abs(v.VsDPDK-65.0/30) > 1e-9 || !math.IsNaN(v.VsOVS) || math.Abs(v.OfMemcpy-65.0/90) > 1e-9 {
		t.Errorf("vhostd ratios: x dpdk %v, x ovs %v, of memcpy %v", v.VsDPDK, v.VsOVS, v.OfMemcpy)
	}
	if rows[2].Failed != 1 || rows[2].Err != "boom" || rows[2].Gbps.N != 0 {
		t.Errorf("failed row %+v", rows[2])
	}
	if rows[3].Refused == "" || rows[3].Gbps.N != 0 {
		t.Errorf("refused row %+v", rows[3])
	}
	var out bytes.Buffer
	WriteTSOTable(&out, rows, mems)
	s := out.String()
	for _, want := range []string{"2.17x", "72%", "target vhostd >= 1.5x DPDK: met over dpdk-io (2.17x), n/a over dpdk-io-legacy-ol", "80% of memcpy: NOT met", "does not offer", "90.0 Gbps from 8 source buffers into 256", "Go's copy and REP MOVSB: 85.0 and 85.0 Gbps into 256", "65.0 into 1023", "vhostd is 100% of the copy into 1023 buffers"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	if err := WriteTSOCSV(&out, reps, mems); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&out).ReadAll()
	if err != nil || len(recs) != 1+len(mems)+len(reps) {
		t.Fatalf("tso.csv: %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if len(r) != len(recs[0]) {
			t.Fatalf("record of %d fields, header %d", len(r), len(recs[0]))
		}
	}
}

func TestTSOBackendsExpandsDPDK(t *testing.T) {
	bs := TSOBackends([]Backend{&Vhostd{}, DPDKRef{}, &OVS{}})
	var names []string
	for _, b := range bs {
		names = append(names, b.Name())
	}
	if got := strings.Join(names, ","); got != "vhostd,dpdk-io,dpdk-io-legacy-ol,ovs-dpdk" {
		t.Errorf("TSO backends %s", got)
	}
	if n := TSOCase().Name(); n != "64KiB TCP segments tso" {
		t.Errorf("TSO case name %q", n)
	}
}

func TestOptionsTSO(t *testing.T) {
	o, err := ParseOptions([]string{"--quick"})
	if err != nil || !o.TSO || !o.Throughput || o.TSOGen != "build/bench/tsogen" {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	o, err = ParseOptions([]string{"--tso=false", "--throughput=false", "--tsogen", "/x/tsogen"})
	if err != nil || o.TSO || o.Throughput || o.TSOGen != "/x/tsogen" {
		t.Fatalf("set: %+v %v", o, err)
	}
}

// TestTSORxBufOption: --tso-rx-buf takes even data rooms from 2048 to
// 65534 and says what to fix otherwise; the default takes a segment in two
// buffers.
func TestTSORxBufOption(t *testing.T) {
	o, err := ParseOptions([]string{"--quick"})
	if err != nil || o.TSORxBuf != DefaultTSORxBuf {
		t.Fatalf("default: %d, %v", o.TSORxBuf, err)
	}
	if o, err = ParseOptions([]string{"--quick", "--tso-rx-buf", "4096"}); err != nil || o.TSORxBuf != 4096 {
		t.Fatalf("4096: %d, %v", o.TSORxBuf, err)
	}
	for _, bad := range []string{"4095", "1024", "65536", "0"} {
		_, err := ParseOptions([]string{"--quick", "--tso-rx-buf", bad})
		if err == nil || !strings.Contains(err.Error(), "--tso-rx-buf") || !strings.Contains(err.Error(), "even number of bytes from 2048 to 65534") {
			t.Errorf("--tso-rx-buf %s: %v", bad, err)
		}
	}
	if got := rxBufWords(4096); got != "of 4096 bytes (--tso-rx-buf) from a pool of 1023 (4 MiB)" {
		t.Errorf("heading words %q", got)
	}
}
