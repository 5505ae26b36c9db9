package buffer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	crashChildEnv = "TILLPIPE_BUFFER_CRASH_DIR"
	crashIterEnv  = "TILLPIPE_BUFFER_CRASH_ITER"
	crashSegBytes = 16 << 10
)

// TestCrashChild is the child of TestCrashKill9: it appends from four
// goroutines under SyncAlways and prints "ack <index> <id>" after each
// Append returns, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashKill9")
	}
	iter, _ := strconv.ParseUint(os.Getenv(crashIterEnv), 10, 64)
	q, err := Open(dir, Options{SegmentBytes: crashSegBytes})
	if err != nil {
		fmt.Fprintf(os.Stdout, "error open: %v\n", err)
		os.Exit(3)
	}
	os.Stdout.WriteString("ready\n")
	for g := range uint64(4) {
		go func() {
			for seq := uint64(0); ; seq++ {
				id := iter<<40 | g<<32 | seq
				idx, err := q.Append(context.Background(), rec(id, 64+rand.IntN(512)), 1)
				if err != nil {
					fmt.Fprintf(os.Stdout, "error append: %v\n", err)
					os.Exit(4)
				}
				os.Stdout.WriteString(fmt.Sprintf("ack %d %d\n", idx, id))
			}
		}()
	}
	select {}
}

// TestCrashKill9 SIGKILLs a child appending under SyncAlways at random
// moments, many times, and checks after each kill that every acknowledged
// record is there exactly once and in order, that records once seen never
// change or vanish, and that nothing below the committed index (moved by a
// random amount between kills) comes back.
func TestCrashKill9(t *testing.T) {
	iterations := 30
	if testing.Short() {
		iterations = 5
	}
	dir := t.TempDir()
	known := map[uint64]uint64{} // index -> id, for every record ever read
	var committed uint64
	var acked int
	budget := time.Now().Add(90 * time.Second) // bounds the run; not an assertion
	for iter := 1; iter <= iterations && time.Now().Before(budget); iter++ {
		acks, out := runCrashChild(t, dir, iter)
		acked += len(acks)

		q, err := Open(dir, Options{SegmentBytes: crashSegBytes})
		if err != nil {
			t.Fatalf("iteration %d: reopen after kill: %v\nchild output tail: %s", iter, err, out)
		}
		if got := q.Committed(); got != committed {
			t.Fatalf("iteration %d: committed index %d after reopen, want %d", iter, got, committed)
		}
		indices, ids := readAll(t, q, committed)
		if st := q.Stats(); st.PendingRecords != int64(len(ids)) {
			t.Fatalf("iteration %d: %d pending records, read %d", iter, st.PendingRecords, len(ids))
		}
		lastSeq := map[uint64]uint64{}
		seenID := map[uint64]bool{}
		for i, idx := range indices {
			if idx != committed+uint64(i) {
				t.Fatalf("iteration %d: record %d has index %d, want %d (gap or reorder)", iter, i, idx, committed+uint64(i))
			}
			id := ids[i]
			if seenID[id] {
				t.Fatalf("iteration %d: id %x appears twice", iter, id)
			}
			seenID[id] = true
			writer, seq := id>>32, id&(1<<32-1)
			if last, ok := lastSeq[writer]; ok && seq <= last {
				t.Fatalf("iteration %d: writer %x seq %d at index %d after seq %d", iter, writer, seq, idx, last)
			}
			lastSeq[writer] = seq
			if old, ok := known[idx]; ok && old != id {
				t.Fatalf("iteration %d: index %d changed from id %x to %x", iter, idx, old, id)
			}
			known[idx] = id
		}
		for idx, id := range acks {
			if idx < committed {
				continue
			}
			if got, ok := known[idx]; !ok || got != id {
				t.Fatalf("iteration %d: acknowledged record %d (id %x) lost; have %x %v", iter, idx, id, got, ok)
			}
		}
		for idx := range known {
			if idx < committed {
				delete(known, idx)
			} else if idx >= q.NextIndex() {
				t.Fatalf("iteration %d: index %d vanished (next index %d)", iter, idx, q.NextIndex())
			}
		}

		next := q.NextIndex()
		committed += rand.Uint64N(next - committed + 1)
		if err := q.Commit(committed); err != nil {
			t.Fatalf("iteration %d: commit %d: %v", iter, committed, err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("acknowledged %d records across kills; final committed index %d", acked, committed)
	if acked == 0 {
		t.Fatal("no record was ever acknowledged; the child never ran")
	}
}

// runCrashChild starts the child, kills it 5-200 ms after it is ready and
// returns the acknowledged index -> id pairs and the tail of its output.
func runCrashChild(t *testing.T, dir string, iter int) (map[uint64]uint64, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashIterEnv+"="+strconv.Itoa(iter))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acks := map[uint64]uint64{}
	var lastLines []string
	ready := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		readyClosed := false
		for sc.Scan() {
			line := sc.Text()
			if len(lastLines) == 5 {
				lastLines = lastLines[1:]
			}
			lastLines = append(lastLines, line)
			if line == "ready" && !readyClosed {
				close(ready)
				readyClosed = true
				continue
			}
			var idx, id uint64
			if n, _ := fmt.Sscanf(line, "ack %d %d", &idx, &id); n == 2 {
				acks[idx] = id
			}
		}
		if !readyClosed {
			close(ready)
		}
	}()
	<-ready
	timer := time.NewTimer(time.Duration(5+rand.IntN(196)) * time.Millisecond)
	<-timer.C
	_ = cmd.Process.Signal(syscall.SIGKILL)
	wg.Wait()
	err = cmd.Wait()
	tail := strings.Join(lastLines, "\n") + "\n" + stderr.String()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("iteration %d: child exited by itself (%v):\n%s", iter, err, tail)
	}
	return acks, tail
}
