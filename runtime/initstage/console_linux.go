package initstage

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// setupConsole creates a pseudo-terminal in the container's devpts, makes
// its slave the process's stdio and controlling terminal, and hands the
// master to whoever listens on --console-socket (SCM_RIGHTS), as the OCI
// runtime command line specifies.
func setupConsole(cfg *Config) error {
	if cfg.ConsoleFD == 0 {
		return fmt.Errorf("process.terminal is set but no --console-socket was given")
	}
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/ptmx (does the spec mount devpts at /dev/pts?): %w", err)
	}
	defer unix.Close(master)
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(master, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("get pty number: %w", err)
	}
	slavePath := fmt.Sprintf("/dev/pts/%d", n)
	slave, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", slavePath, err)
	}
	defer unix.Close(slave)
	if cs := cfg.Spec.Process.ConsoleSize; cs != nil {
		ws := unix.Winsize{Row: uint16(cs.Height), Col: uint16(cs.Width)}
		if err := unix.IoctlSetWinsize(slave, unix.TIOCSWINSZ, &ws); err != nil {
			return fmt.Errorf("process.consoleSize: %w", err)
		}
	}
	rights := unix.UnixRights(master)
	if err := unix.Sendmsg(cfg.ConsoleFD, []byte(slavePath), rights, nil, 0); err != nil {
		return fmt.Errorf("send the terminal to --console-socket: %w", err)
	}
	unix.Close(cfg.ConsoleFD)
	for _, fd := range []int{0, 1, 2} {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return fmt.Errorf("attach terminal: %w", err)
		}
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("make the terminal controlling: %w", err)
	}
	return nil
}
