package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
)

// receiveConsole takes the pty master the init sent over sock.
func receiveConsole(sock *os.File) (*os.File, error) {
	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("receive the terminal: malformed message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errors.New("receive the terminal: want one descriptor")
	}
	return os.NewFile(uintptr(fds[0]), "pty master"), nil
}

// RelayConsole makes in and out the other end of a container's terminal
// (the master Create passed to CreateOptions.Console), as `runc run` does
// in the foreground: what in reads goes to the container, what the
// container writes goes to out. When in is a terminal it is put in raw mode
// (the container's terminal does the echoing and line editing) and its
// window size is passed on, now and on SIGWINCH. stop waits up to a second
// for the container's last output, then restores in.
func RelayConsole(master, in, out *os.File) (stop func()) {
	restore := func() {}
	if st, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS); err == nil {
		raw := *st
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, &raw) == nil {
			restore = func() { _ = unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, st) }
		}
		resize := func() {
			if ws, err := unix.IoctlGetWinsize(int(in.Fd()), unix.TIOCGWINSZ); err == nil {
				_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws)
			}
		}
		resize()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, unix.SIGWINCH)
		go func() {
			for range winch {
				resize()
			}
		}()
		prev := restore
		restore = func() { signal.Stop(winch); close(winch); prev() }
	}
	go func() { _, _ = io.Copy(master, in) }()
	drained := make(chan struct{})
	go func() {
		// Reads fail with EIO once the container's side is closed.
		_, _ = io.Copy(out, master)
		close(drained)
	}()
	return func() {
		select {
		case <-drained:
		case <-time.After(time.Second):
		}
		restore()
		master.Close()
	}
}
