package term

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, slave, err := OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); slave.Close() })
	return master, slave
}

// TestOpenPTY: what is written to the slave is read from the master, and
// closing the master ends a Read that waits on it (what lets a relay stop
// when the process behind the terminal left a child holding it).
func TestOpenPTY(t *testing.T) {
	master, slave := openPTY(t)
	if !IsTerminal(int(slave.Fd())) {
		t.Fatal("the slave is not a terminal")
	}
	if _, err := slave.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := master.Read(buf)
	if err != nil || string(buf[:n]) != "hi\r\n" {
		t.Fatalf("master read %q, %v; want \"hi\\r\\n\"", buf[:n], err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := master.Read(buf)
		read <- err
	}()
	time.Sleep(100 * time.Millisecond)
	master.Close()
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("a Read waiting on a closed master: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("closing the master did not end a Read waiting on it")
	}
}

// TestRawModeAndRestore: raw mode turns off echo, line editing, key
// signals and output processing; restore brings the terminal back.
func TestRawModeAndRestore(t *testing.T) {
	_, slave := openPTY(t)
	fd := int(slave.Fd())
	if !IsTerminal(fd) {
		t.Fatal("a pty slave is not a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if IsTerminal(int(r.Fd())) {
		t.Fatal("a pipe is a terminal")
	}
	before, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
	restore, err := MakeRaw(fd)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
	if raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 || raw.Oflag&unix.OPOST != 0 || raw.Iflag&unix.ICRNL != 0 {
		t.Fatalf("raw mode: lflag %#x oflag %#x iflag %#x", raw.Lflag, raw.Oflag, raw.Iflag)
	}
	restore()
	after, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
	if *after != *before {
		t.Fatalf("not restored: %+v, was %+v", after, before)
	}
}

// TestSizeAndItsChanges: a size set on the master is the slave's, and a
// change is reported after SIGWINCH.
func TestSizeAndItsChanges(t *testing.T) {
	master, slave := openPTY(t)
	if err := SetSize(master, 132, 43); err != nil {
		t.Fatal(err)
	}
	if w, h, err := Size(int(slave.Fd())); err != nil || w != 132 || h != 43 {
		t.Fatalf("Size = %dx%d, %v; want 132x43", w, h, err)
	}
	got := make(chan [2]uint16, 4)
	stop := NotifySize(int(slave.Fd()), func(w, h uint16) { got <- [2]uint16{w, h} })
	defer stop()
	if err := SetSize(master, 80, 24); err != nil {
		t.Fatal(err)
	}
	// The slave is nobody's controlling terminal: signal as the kernel
	// would signal its foreground process group.
	if err := unix.Kill(os.Getpid(), unix.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != [2]uint16{80, 24} {
			t.Fatalf("reported %v, want 80x24", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no size reported after SIGWINCH")
	}
}
