package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// WakeFloor measures what the first frame after idle costs on this
// machine before any backend code runs: a thread pinned to the backend
// CPU blocks in epoll_wait on an eventfd (as an idle poller does on its
// kick eventfds); after each idle gap the caller's thread on the generator
// CPU writes the eventfd and spins until the woken thread has stored a
// flag. On a virtual machine this is mostly the wake-up of a halted vCPU.
// The caller must be locked to its OS thread and pinned to the generator
// CPU.
func WakeFloor(ctx context.Context, backendCPU int, idle time.Duration, n int) ([]time.Duration, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wake floor: eventfd: %w", err)
	}
	defer unix.Close(efd)
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wake floor: epoll: %w", err)
	}
	defer unix.Close(epfd)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		return nil, fmt.Errorf("wake floor: epoll_ctl: %w", err)
	}
	var woke atomic.Int64
	ready := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread, pinned to the backend CPU, ends
		// with this goroutine instead of going back to Go's pool.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(backendCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ready <- err
			return
		}
		ready <- nil
		ev := make([]unix.EpollEvent, 1)
		var b [8]byte
		for i := 0; i < n; i++ {
			for {
				_, err := unix.EpollWait(epfd, ev, -1)
				if err == nil {
					break
				}
				if !errors.Is(err, unix.EINTR) {
					return
				}
			}
			unix.Read(efd, b[:])
			woke.Store(int64(i + 1))
		}
	}()
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("wake floor: pin: %w", err)
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	var out []time.Duration
	for i := 0; i < n; i++ {
		select {
		case <-ctx.Done():
			unix.Write(efd, one) // let the waiter go
			return out, ctx.Err()
		case <-time.After(idle):
		}
		t0 := time.Now()
		unix.Write(efd, one)
		for j := 0; woke.Load() != int64(i+1); j++ {
			if j&1023 == 0 && time.Since(t0) > probeTimeout {
				return out, errors.New("wake floor: waiter did not wake")
			}
		}
		out = append(out, time.Since(t0))
	}
	<-done
	return out, nil
}
