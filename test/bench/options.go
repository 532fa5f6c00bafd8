package main

import (
	"flag"
	"fmt"
	"time"
)

// Options are the bench's settings (flags).
type Options struct {
	Quick                 bool
	Reps                  int
	Warmup, Window, Every time.Duration
	Frames                []int
	Mrg                   []bool
	// Huge lists the memory configurations: false = no hugepages, true
	// = DPDK's memory on 2 MiB pages (--huge off,on).
	Huge               []bool
	Backends           []string
	MQBackends         []string
	GenCPU, BackendCPU int
	SeedBursts         int
	RetryCollapsed     int
	VhostdBin          string
	OVSVswitchd        string
	Out                string
	// VMVM and Uplink enable the throughput cases of the two topologies
	// (VMToVM, VMUplink).
	VMVM, Uplink bool
	// Pool lists reps.csv files of earlier runs whose repetitions are
	// pooled with this run's (medians, intervals).
	Pool []string
	// MQ enables the multi-queue section; IdleProbes the number of
	// first-frame probes (0 skips the idle section), each after Idle.
	MQ         bool
	IdleProbes int
	Idle       time.Duration
	// Packed enables the packed-ring section (VM-to-VM, --frames, the
	// first --mrg value, vhostd and dpdk-io).
	Packed bool
	// TSO enables the TSO section (64 KiB TCP segments, VM-to-VM, one
	// way, every backend, and the backend CPU's memcpy bandwidth);
	// TSOGen is the generator binary (test/bench/tsogen).
	TSO    bool
	TSOGen string
	// TSORxBuf is the data room of the TSO receiver's mbufs (tsogen
	// -rx-buf): DefaultTSORxBuf takes a segment in two buffers.
	TSORxBuf int
	// Throughput enables the throughput tables (off: only the other
	// sections asked for, e.g. --throughput=false --packed=false
	// --mq=false --idle-probes=0 for the TSO section alone).
	Throughput bool
}

// ParseOptions parses the command line. --quick changes the defaults of
// the other flags (flags given explicitly win).
func ParseOptions(args []string) (Options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o Options
	var frames, mrg, huge, backends, mqBackends, pool string
	fs.BoolVar(&o.Quick, "quick", false, "smoke test: 1 repetition, short windows, one case (64B mrg=on) per topology")
	fs.IntVar(&o.Reps, "reps", 3, "repetitions of every measurement (median and spread are over these)")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "time after seeding the loop before the window starts")
	fs.DurationVar(&o.Window, "window", 5*time.Second, "measured window per repetition")
	fs.DurationVar(&o.Every, "sample", 250*time.Millisecond, "sampling interval of the rate-over-time plot")
	fs.StringVar(&frames, "frames", "64,1518", "frame sizes in bytes, FCS included")
	fs.StringVar(&mrg, "mrg", "on,off", "mrg_rxbuf settings")
	fs.StringVar(&huge, "huge", "off,on", "memory configurations: off = no hugepages, on = generator, dpdk-io and OVS on 2 MiB hugepages (the bench reserves and mounts them, and gives them back)")
	fs.StringVar(&backends, "backends", "vhostd,dpdk-io,ovs-dpdk", "backends to measure")
	fs.IntVar(&o.GenCPU, "gen-cpu", 0, "CPU of the traffic generator (and of this program)")
	fs.IntVar(&o.BackendCPU, "backend-cpu", 1, "CPU of the backend under test")
	fs.IntVar(&o.SeedBursts, "seed-bursts", 0, fmt.Sprintf("N of 'start tx_first N' that seeds the closed loop (0: %d frames per port, N = %d / (32 x queues))", DefaultSeedFrames, DefaultSeedFrames))
	fs.BoolVar(&o.VMVM, "vm-vm", true, "measure the VM-to-VM cases (generator on sockets a and b)")
	fs.BoolVar(&o.Uplink, "uplink", true, "measure the VM-to-uplink cases (generator on socket a and on the backend's DPDK uplink, net_vhost on socket u)")
	fs.IntVar(&o.RetryCollapsed, "retry-collapsed", 1, "times a repetition whose loop collapsed is run again")
	fs.StringVar(&o.VhostdBin, "vhostd", "bin/vhostd", "vhostd binary")
	fs.StringVar(&o.OVSVswitchd, "ovs-vswitchd", DefaultOVSVswitchd, "ovs-vswitchd built with DPDK")
	fs.StringVar(&o.Out, "out", "build/bench", "output directory")
	fs.StringVar(&pool, "pool", "", "comma-separated reps.csv files of earlier runs to pool with this run's repetitions (same case names)")
	fs.BoolVar(&o.MQ, "mq", true, "measure with 2 queue pairs and (vhostd) 2 pollers")
	fs.BoolVar(&o.Packed, "packed", true, "measure VM-to-VM with packed virtqueues (generator packed_vq=1) on vhostd and dpdk-io")
	fs.BoolVar(&o.Throughput, "throughput", true, "measure the throughput tables (VM-to-VM and VM-to-uplink closed loops)")
	fs.BoolVar(&o.TSO, "tso", true, "measure 64 KiB TCP segments with TSO metadata VM-to-VM (tsogen) on every backend, and one core's memcpy bandwidth")
	fs.StringVar(&o.TSOGen, "tsogen", "build/bench/tsogen", "the TSO section's generator (go build -o build/bench/tsogen ./test/bench/tsogen)")
	fs.IntVar(&o.TSORxBuf, "tso-rx-buf", DefaultTSORxBuf, "data room in bytes of the TSO receiver's buffers (even, 2048 to 65534): the default takes a segment in two; 4096 is a Linux guest's page-sized mergeable buffers, 17 per segment")
	fs.StringVar(&mqBackends, "mq-backends", "vhostd,dpdk-io", "backends of the multi-queue section (of those in --backends)")
	fs.IntVar(&o.IdleProbes, "idle-probes", 5, "first-frame-after-idle probes (0: skip the idle measures)")
	fs.DurationVar(&o.Idle, "idle", time.Second, "idle time before each probe (and CPU measuring interval)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("reps", func() { o.Reps = 1 })
		def("warmup", func() { o.Warmup = time.Second })
		def("window", func() { o.Window = 2 * time.Second })
		def("frames", func() { frames = "64" })
		def("mrg", func() { mrg = "on" })
		def("idle-probes", func() { o.IdleProbes = 3 })
	}
	var err error
	if o.Frames, err = ParseFrames(frames); err != nil {
		return o, err
	}
	if o.Mrg, err = ParseOnOff(mrg); err != nil {
		return o, err
	}
	if o.Huge, err = ParseOnOff(huge); err != nil {
		return o, fmt.Errorf("--huge: %w", err)
	}
	o.Pool = splitList(pool)
	o.Backends = splitList(backends)
	o.MQBackends = splitList(mqBackends)
	if o.Reps < 1 || o.RetryCollapsed < 0 || o.Window <= 0 || o.Warmup < 0 || o.Every <= 0 || o.Every > o.Window {
		return o, fmt.Errorf("need reps >= 1, window > 0, warmup >= 0, 0 < sample <= window")
	}
	if o.SeedBursts < 0 {
		return o, fmt.Errorf("--seed-bursts %d: want 0 (default) or more", o.SeedBursts)
	}
	if err := CheckTSORxBuf(o.TSORxBuf); err != nil {
		return o, fmt.Errorf("--tso-rx-buf: %w", err)
	}
	if !o.VMVM && !o.Uplink {
		return o, fmt.Errorf("--vm-vm=false and --uplink=false: no throughput case left")
	}
	if o.GenCPU == o.BackendCPU {
		return o, fmt.Errorf("generator and backend on the same CPU %d: the bench needs two", o.GenCPU)
	}
	return o, nil
}
