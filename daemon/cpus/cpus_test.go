package cpus

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"3", []int{3}},
		{"2,3", []int{2, 3}},
		{"3,1", []int{3, 1}},
		{"2-5", []int{2, 3, 4, 5}},
		{" 0-1 , 6 ", []int{0, 1, 6}},
		{"4-4", []int{4}},
	} {
		got, err := Parse(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", "empty CPU list"},
		{"a", `"a" is not a CPU number`},
		{"-1", `"-1" is not a CPU number`},
		{"1,,2", `"" is not a CPU number`},
		{"5-2", "goes down: write it low-high (2-5)"},
		{"1,0-2", "CPU 1 is named twice"},
		{"2-", `"2-" is not a CPU number`},
		{"99999", "CPU numbers go up to"},
	} {
		if _, err := Parse(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) error %v, want one saying %q", c.in, err, c.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{0}, "0"},
		{[]int{3, 0, 1, 2, 6}, "0-3,6"},
		{[]int{1, 3, 5}, "1,3,5"},
		{[]int{7, 8, 8}, "7-8"},
	} {
		if got := Format(c.in); got != c.want {
			t.Errorf("Format(%v) = %q, want %q", c.in, got, c.want)
		}
		if c.want != "" {
			back, err := Parse(c.want)
			if err != nil || Format(back) != c.want {
				t.Errorf("Parse(Format(%v)) = %v, %v", c.in, back, err)
			}
		}
	}
}

func TestCheck(t *testing.T) {
	if err := Check([]int{1, 2}, []int{0, 1, 2, 3}); err != nil {
		t.Error(err)
	}
	err := Check([]int{1, 5, 6}, []int{0, 1, 2, 3})
	if err == nil || !strings.Contains(err.Error(), "CPU 5-6 is not one vhostd may run on (allowed: 0-3") {
		t.Errorf("Check: %v", err)
	}
}

// allowedTwo returns the test process's CPUs, failing unless there are at
// least two: one to keep off, one for the rest.
func allowedTwo(t *testing.T) []int {
	t.Helper()
	allowed, err := Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		t.Fatalf("this test needs 2 CPUs, the process may use %s (run it without taskset)", Format(allowed))
	}
	return allowed
}

// KeepOff moves every thread of the process, those running goroutines
// included, off the given CPUs; a thread started afterwards stays off;
// SetAll gives the CPUs back.
func TestKeepOff(t *testing.T) {
	allowed := allowedTwo(t)
	off := allowed[len(allowed)-1:]
	defer func() {
		if err := SetAll(allowed); err != nil {
			t.Fatal(err)
		}
	}()
	// Busy goroutines on threads of their own while the masks change.
	stop := make(chan struct{})
	done := make(chan struct{})
	for i := 0; i < 3; i++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for {
				select {
				case <-stop:
					done <- struct{}{}
					return
				default:
				}
			}
		}()
	}
	rest, err := KeepOff(allowed, off)
	if err != nil {
		t.Fatal(err)
	}
	if want := allowed[:len(allowed)-1]; !slices.Equal(rest, want) {
		t.Fatalf("KeepOff = %v, want %v", rest, want)
	}
	// A new thread, from a locked goroutine (the runtime's template
	// thread makes it).
	newTID := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		newTID <- unix.Gettid()
		<-stop
		done <- struct{}{}
	}()
	tid := <-newTID
	checkAll(t, rest)
	if got, err := OfThread(0, tid); err != nil || !slices.Equal(got, rest) {
		t.Errorf("thread %d started after KeepOff may use %v (%v), want %v", tid, got, err, rest)
	}
	close(stop)
	for i := 0; i < 4; i++ {
		<-done
	}
	if err := SetAll(allowed); err != nil {
		t.Fatal(err)
	}
	checkAll(t, allowed)
}

// KeepOff of every CPU changes nothing.
func TestKeepOffAll(t *testing.T) {
	allowed := allowedTwo(t)
	rest, err := KeepOff(allowed, allowed)
	if err != nil || len(rest) != 0 {
		t.Fatalf("KeepOff(all) = %v, %v", rest, err)
	}
	checkAll(t, allowed)
}

func checkAll(t *testing.T, want []int) {
	t.Helper()
	tids, err := Threads()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		got, err := OfThread(0, tid)
		if err != nil {
			continue // gone meanwhile
		}
		if !slices.Equal(got, want) {
			t.Errorf("thread %d may use CPUs %s, want %s", tid, Format(got), Format(want))
		}
	}
}

// Two busy threads on one CPU: the kernel takes turns between them,
// which Preemptions counts.
func TestPreemptions(t *testing.T) {
	allowed := allowedTwo(t)
	cpu := allowed[0]
	stop := make(chan struct{})
	ready := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set, old unix.CPUSet
		unix.SchedGetaffinity(0, &old)
		set.Set(cpu)
		ready <- unix.SchedSetaffinity(0, &set)
		for {
			select {
			case <-stop:
				unix.SchedSetaffinity(0, &old)
				ready <- nil
				return
			default:
			}
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.CPUSet
	unix.SchedGetaffinity(0, &old)
	defer unix.SchedSetaffinity(0, &old)
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	tid := unix.Gettid()
	before, err := Preemptions(tid)
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := Preemptions(tid)
	close(stop)
	<-ready
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("a thread sharing CPU %d with a busy one for 300ms: preemptions %d -> %d, want more", cpu, before, after)
	}
	if _, err := Preemptions(1 << 30); err == nil {
		t.Error("Preemptions of a thread that does not exist: no error")
	}
}
