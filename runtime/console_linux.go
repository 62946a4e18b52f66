package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/term"
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
	// Non-blocking, so that the File uses the poller: Close then ends a
	// Read that is waiting for output a background process may never write.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("receive the terminal: %w", err)
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
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		if undo, err := term.MakeRaw(fd); err == nil {
			restore = undo
		}
		resize := func(w, h uint16) { _ = term.SetSize(master, w, h) }
		if w, h, err := term.Size(fd); err == nil {
			resize(w, h)
		}
		stopSize := term.NotifySize(fd, resize)
		prev := restore
		restore = func() { stopSize(); prev() }
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
