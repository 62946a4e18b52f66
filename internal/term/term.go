// Package term is what a program needs to be the far end of a terminal:
// raw mode on its own terminal, and the terminal's size as it changes.
// `nexus exec -t` and the runtime's foreground `run -t` relay a
// container's terminal this way, as ssh and docker do. OpenPTY makes a
// new terminal, for a process run with one (servertest.HostNode) and for
// tests that play the user at a terminal.
//
// The init stage (runtime/initstage) opens its terminal itself: it works
// on raw descriptors in the container's devpts and hands the master, left
// blocking, to whoever listens on --console-socket.
package term

import (
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether fd is a terminal.
func IsTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// MakeRaw puts the terminal fd in raw mode (no echo, no line editing, no
// signals from keys, no output processing: the far terminal does all of
// that) and returns the function that restores it.
func MakeRaw(fd int) (restore func(), err error) {
	st, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *st
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, st) }, nil
}

// Size returns the terminal fd's width and height in characters.
func Size(fd int) (width, height uint16, err error) {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, err
	}
	return ws.Col, ws.Row, nil
}

// NotifySize calls changed with the terminal fd's size each time it
// changes (SIGWINCH), from one goroutine, until stop is called.
func NotifySize(fd int, changed func(width, height uint16)) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range winch {
			if w, h, err := Size(fd); err == nil {
				changed(w, h)
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(winch)
		<-done
	}
}

// SetSize sets the size of the terminal f (a pty master or slave). It
// reaches the descriptor without File.Fd, which would take f off the
// poller, so a Read waiting on f still ends when f is closed.
func SetSize(f *os.File, width, height uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: width, Row: height})
	})
	if err != nil {
		return err
	}
	return serr
}

// OpenPTY opens a new pseudo-terminal and returns its two ends. The
// master is non-blocking, so that it uses the poller and closing it ends
// a Read waiting on it; the slave is not made anyone's controlling
// terminal (a child takes it with SysProcAttr.Setctty).
func OpenPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(m), "pty master")
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock a pty: %w", err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("number of a pty: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}
