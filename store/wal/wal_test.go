package wal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

func ents(term uint64, from, to uint64) []*pb.Entry {
	var es []*pb.Entry
	for i := from; i <= to; i++ {
		es = append(es, &pb.Entry{Term: new(term), Index: new(i), Type: new(pb.EntryNormal), Data: fmt.Appendf(nil, "t%d-i%d", term, i)})
	}
	return es
}

func hardState(term, vote, commit uint64) *pb.HardState {
	return &pb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func open(t *testing.T, dir string, opts Options) (*WAL, *State) {
	t.Helper()
	w, st, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, st
}

func describe(es []*pb.Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%d/%d:%s ", e.GetIndex(), e.GetTerm(), e.Data)
	}
	return b.String()
}

// TestRecover saves frames, including a log suffix a new leader overwrote,
// and expects Open to return the log raft would have.
func TestRecover(t *testing.T) {
	dir := t.TempDir()
	w, st := open(t, dir, Options{})
	if st.HardState != nil || len(st.Entries) != 0 {
		t.Fatalf("new log recovered %+v", st)
	}
	steps := []struct {
		hs   *pb.HardState
		ents []*pb.Entry
	}{
		{hardState(1, 1, 0), ents(1, 1, 5)},
		{hardState(1, 1, 3), nil},
		{hardState(2, 2, 3), ents(2, 4, 6)}, // overwrites 4 and 5
		{nil, ents(2, 7, 7)},
	}
	for _, s := range steps {
		if err := w.Save(s.hs, s.ents, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SaveSnapshot(Marker{Index: 3, Term: 1}); err != nil {
		t.Fatal(err)
	}
	w.Close()

	_, st = open(t, dir, Options{})
	want := append(ents(1, 1, 3), ents(2, 4, 7)...)
	if got, w := describe(st.Entries), describe(want); got != w {
		t.Fatalf("entries\n got %s\nwant %s", got, w)
	}
	if hs := st.HardState; hs.GetTerm() != 2 || hs.GetVote() != 2 || hs.GetCommit() != 3 {
		t.Fatalf("HardState %v, want term 2 vote 2 commit 3", hs)
	}
	if len(st.Snapshots) != 1 || st.Snapshots[0] != (Marker{Index: 3, Term: 1}) {
		t.Fatalf("snapshots %v", st.Snapshots)
	}
}

// TestTornTail cuts the last frame in half, as a crash during its write
// would, and expects Open to drop it with a warning and the log to go on.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	w, _ := open(t, dir, Options{SegmentSize: 1 << 20})
	if err := w.Save(hardState(1, 1, 2), ents(1, 1, 2), true); err != nil {
		t.Fatal(err)
	}
	lastOff := w.off
	if err := w.Save(hardState(1, 1, 4), ents(1, 3, 4), true); err != nil {
		t.Fatal(err)
	}
	end := w.off
	w.Close()

	path := filepath.Join(dir, segmentName(0))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	half := lastOff + (end-lastOff)/2
	if _, err := f.WriteAt(make([]byte, end-half), half); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var logs bytes.Buffer
	w, st := open(t, dir, Options{SegmentSize: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got, want := describe(st.Entries), describe(ents(1, 1, 2)); got != want {
		t.Fatalf("entries after a torn tail\n got %s\nwant %s", got, want)
	}
	if st.HardState.GetCommit() != 2 {
		t.Fatalf("HardState %v, want commit 2", st.HardState)
	}
	if !strings.Contains(logs.String(), "torn") || !strings.Contains(logs.String(), path) {
		t.Fatalf("no warning naming the torn file: %q", logs.String())
	}
	if err := w.Save(hardState(1, 1, 3), ents(1, 3, 3), true); err != nil {
		t.Fatal(err)
	}
	w.Close()
	_, st = open(t, dir, Options{SegmentSize: 1 << 20})
	if got, want := describe(st.Entries), describe(ents(1, 1, 3)); got != want {
		t.Fatalf("entries after appending past the repaired tail\n got %s\nwant %s", got, want)
	}
}

// TestCorruptMiddle damages a frame that has valid frames after it: Open must
// refuse, naming the file and offset.
func TestCorruptMiddle(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(frameOff int64) int64
	}{
		{"payload", func(off int64) int64 { return off + headerSize + 3 }},
		{"header", func(off int64) int64 { return off }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, _ := open(t, dir, Options{SegmentSize: 1 << 20})
			var offs []int64
			for i := uint64(1); i <= 3; i++ {
				offs = append(offs, w.off)
				if err := w.Save(hardState(1, 1, i), ents(1, i, i), true); err != nil {
					t.Fatal(err)
				}
			}
			w.Close()
			path := filepath.Join(dir, segmentName(0))
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{0xde, 0xad}, tc.at(offs[1])); err != nil {
				t.Fatal(err)
			}
			f.Close()
			_, _, err = Open(dir, Options{SegmentSize: 1 << 20})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open of a damaged log: %v, want ErrCorrupt", err)
			}
			if want := fmt.Sprintf("%s offset %d", path, offs[1]); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %q", err, want)
			}
		})
	}
}

// TestReplayMemory: a segment is reserved at full size, and replay must not
// cost that much memory. Opening a log of 100 small entries in a 64 MiB
// segment allocates about what the entries take; reading the segment whole
// allocated all 64 MiB, which a restarted nexus up kept as idle RSS.
func TestReplayMemory(t *testing.T) {
	dir := t.TempDir()
	w, _ := open(t, dir, Options{SegmentSize: DefaultSegmentSize})
	for i := uint64(1); i <= 100; i++ {
		if err := w.Save(hardState(1, 1, i-1), ents(1, i, i), true); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w, st, err := Open(dir, Options{SegmentSize: DefaultSegmentSize})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if got, want := describe(st.Entries), describe(ents(1, 1, 100)); got != want {
		t.Fatalf("entries\n got %s\nwant %s", got, want)
	}
	const bound = 1 << 20
	if got := after.TotalAlloc - before.TotalAlloc; got > bound {
		t.Fatalf("replaying 100 entries of a %d MiB segment allocated %d KiB, want under %d KiB (was the segment read whole?)",
			DefaultSegmentSize>>20, got>>10, bound>>10)
	}
}

// FuzzReadSegment replays arbitrary bytes as the last segment: replay
// returns the log or ErrCorrupt, never panics or reads past the file, and
// a log it repaired (a torn tail cut off) replays again to the same state.
func FuzzReadSegment(f *testing.F) {
	dir := f.TempDir()
	w, _, err := Open(dir, Options{SegmentSize: 4096})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct {
		hs   *pb.HardState
		ents []*pb.Entry
	}{{hardState(1, 1, 0), ents(1, 1, 3)}, {hardState(1, 1, 2), nil}, {hardState(2, 2, 3), ents(2, 3, 5)}} {
		if err := w.Save(s.hs, s.ents, true); err != nil {
			f.Fatal(err)
		}
	}
	if err := w.SaveSnapshot(Marker{Index: 2, Term: 1}); err != nil {
		f.Fatal(err)
	}
	end := w.off
	w.Close()
	seg, err := os.ReadFile(filepath.Join(dir, segmentName(0)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seg[len(magic):end], uint16(64))
	f.Add(seg[len(magic):end-3], uint16(64)) // a torn tail
	f.Add(seg[len(magic):end-3], uint16(0))  // a frame past the end
	f.Add(seg[len(magic):20], uint16(7))     // a partial header
	f.Fuzz(func(t *testing.T, body []byte, zeros uint16) {
		dir := t.TempDir()
		path := filepath.Join(dir, segmentName(0))
		data := append(append([]byte(magic), body...), make([]byte, zeros)...)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		w := &WAL{dir: dir, opts: Options{SegmentSize: 4096}, log: slog.New(slog.DiscardHandler)}
		replay := func() (int64, string, error) {
			st := &State{}
			off, _, err := w.readSegment(path, true, st)
			return off, fmt.Sprintf("%s %v %v", describe(st.Entries), st.HardState, st.Snapshots), err
		}
		off, state, err := replay()
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("replay failed with %v, want nil or ErrCorrupt", err)
			}
			return
		}
		if off < int64(len(magic)) || off > int64(len(data)) {
			t.Fatalf("replay ends at offset %d of a %d-byte file", off, len(data))
		}
		again, state2, err := replay()
		if err != nil || again != off || state2 != state {
			t.Fatalf("second replay: offset %d, %v, state %s; first: offset %d, state %s", again, err, state2, off, state)
		}
	})
}

// TestSegments fills small segments, releases those a snapshot covers, and
// recovers the rest with the HardState restated at each segment's start.
func TestSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1024}
	w, _ := open(t, dir, opts)
	for i := uint64(1); i <= 200; i++ {
		if err := w.Save(hardState(1, 1, i-1), ents(1, i, i), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SaveSnapshot(Marker{Index: 150, Term: 1}); err != nil {
		t.Fatal(err)
	}
	segs := w.Segments()
	if segs < 3 {
		t.Fatalf("%d segments, want several", segs)
	}
	if err := w.ReleaseTo(150); err != nil {
		t.Fatal(err)
	}
	if w.Segments() >= segs {
		t.Fatalf("ReleaseTo kept all %d segments", segs)
	}
	w.Close()
	_, st := open(t, dir, opts)
	if last := st.Entries[len(st.Entries)-1].GetIndex(); last != 200 {
		t.Fatalf("last entry %d, want 200", last)
	}
	if first := st.Entries[0].GetIndex(); first > 151 {
		t.Fatalf("first entry %d: entries after the snapshot were released", first)
	}
	if st.HardState.GetCommit() != 199 {
		t.Fatalf("HardState %v, want commit 199", st.HardState)
	}
	if n := len(st.Snapshots); n == 0 || st.Snapshots[n-1].Index != 150 {
		t.Fatalf("snapshot markers %v", st.Snapshots)
	}
}

// TestSpareSegment: the next segment waits, its full size allocated, while
// the log is open, is taken by the next cut, and does not outlive Close.
func TestSpareSegment(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 10
	w, _, err := Open(dir, Options{SegmentSize: size})
	if err != nil {
		t.Fatal(err)
	}
	spare := filepath.Join(dir, spareName)
	waitSpare := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if fi, err := os.Stat(spare); err == nil && fi.Size() == size && fi.Sys().(*syscall.Stat_t).Blocks*512 >= size {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no full-size spare segment appeared")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSpare()
	for i := uint64(1); w.Segments() < 2; i++ {
		if err := w.Save(hardState(1, 1, i-1), ents(1, i, i), true); err != nil {
			t.Fatal(err)
		}
	}
	// The cut took the spare (renamed into place) and a new one follows.
	waitSpare()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spare); !os.IsNotExist(err) {
		t.Fatalf("spare segment left after Close: %v", err)
	}
	_, st := open(t, dir, Options{SegmentSize: size})
	if len(st.Entries) == 0 {
		t.Fatal("entries lost across the cut")
	}
}

// TestSyncs counts fsyncs: one per synced Save, none for an unsynced one.
func TestSyncs(t *testing.T) {
	w, _ := open(t, t.TempDir(), Options{SegmentSize: 1 << 20})
	base := w.Syncs()
	if err := w.Save(hardState(1, 1, 0), ents(1, 1, 100), true); err != nil {
		t.Fatal(err)
	}
	if err := w.Save(hardState(1, 1, 100), nil, false); err != nil {
		t.Fatal(err)
	}
	if got := w.Syncs() - base; got != 1 {
		t.Fatalf("%d fsyncs, want 1 (100 entries in one synced frame, then a commit-only update)", got)
	}
}

// TestLocked refuses a second Open of the same directory.
func TestLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{SegmentSize: 1 << 20})
	if _, _, err := Open(dir, Options{SegmentSize: 1 << 20}); err == nil {
		t.Fatal("a second Open of a log in use succeeded")
	}
}

func BenchmarkSave(b *testing.B) {
	w, _, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	data := make([]byte, 256)
	i := uint64(0)
	for b.Loop() {
		i++
		e := &pb.Entry{Term: new(uint64(1)), Index: new(i), Type: new(pb.EntryNormal), Data: data}
		if err := w.Save(hardState(1, 1, i), []*pb.Entry{e}, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplay replays a segment of 10,000 entries of 256 bytes, saved
// ten to a frame as raft's Readies save them, in a full-size segment.
func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	w, _, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 256)
	for i := uint64(1); i <= 10000; i += 10 {
		var es []*pb.Entry
		for j := i; j < i+10; j++ {
			es = append(es, &pb.Entry{Term: new(uint64(1)), Index: new(j), Type: new(pb.EntryNormal), Data: data})
		}
		if err := w.Save(hardState(1, 1, i), es, false); err != nil {
			b.Fatal(err)
		}
	}
	logBytes := w.off
	w.Close()
	path := filepath.Join(dir, segmentName(0))
	b.SetBytes(logBytes)
	b.ReportAllocs()
	for b.Loop() {
		st := &State{}
		if _, _, err := w.readSegment(path, false, st); err != nil {
			b.Fatal(err)
		}
		if len(st.Entries) != 10000 {
			b.Fatalf("replayed %d entries, want 10000", len(st.Entries))
		}
	}
}
