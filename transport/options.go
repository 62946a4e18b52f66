package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"nexus.dev/nexus/security/identity"
)

// Tuning holds the limits and timers both ends share. Zero fields take the
// defaults named on each.
type Tuning struct {
	// MaxFrameSize bounds one frame body (DefaultMaxFrameSize, 4 MiB).
	MaxFrameSize int
	// KeepAlivePeriod is how often an idle connection sends a PING so NATs
	// and the peer's idle timer keep it (10 s).
	KeepAlivePeriod time.Duration
	// IdleTimeout closes a connection that received nothing for this long;
	// with keepalives it is how fast a vanished peer is noticed (30 s).
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a handshake (5 s).
	HandshakeTimeout time.Duration
}

func (t Tuning) withDefaults() Tuning {
	if t.MaxFrameSize <= 0 {
		t.MaxFrameSize = DefaultMaxFrameSize
	}
	if t.KeepAlivePeriod <= 0 {
		t.KeepAlivePeriod = 10 * time.Second
	}
	if t.IdleTimeout <= 0 {
		t.IdleTimeout = 30 * time.Second
	}
	if t.HandshakeTimeout <= 0 {
		t.HandshakeTimeout = 5 * time.Second
	}
	return t
}

func (t Tuning) quicConfig() *quic.Config {
	return &quic.Config{
		// quic-go aborts a handshake after twice the idle timeout given here.
		HandshakeIdleTimeout: t.HandshakeTimeout / 2,
		MaxIdleTimeout:       t.IdleTimeout,
		KeepAlivePeriod:      t.KeepAlivePeriod,
		EnableDatagrams:      true,
		MaxIncomingStreams:   1000,
		// Uni streams are not part of the protocol.
		MaxIncomingUniStreams: -1,
		Allow0RTT:             false,
	}
}

// baseTLS is the part of the TLS configuration both sides share.
func baseTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Credentials.VerifyPeer is the verification (bundle, validity,
		// revocation); Go's own would use a fixed pool and no revocation.
		InsecureSkipVerify: true,
		// Every connection presents, and has verified, the current
		// certificate; resumption would reuse an old verification.
		SessionTicketsDisabled: true,
	}
}

// verifyChain runs the cryptographic check (Credentials) and then the role
// check, and wraps a failure with the TLS alert that names it.
func verifyChain(creds Credentials, chain []*x509.Certificate, role func(identity.ID) error) (identity.ID, error) {
	if len(chain) == 0 {
		return identity.ID{}, withAlert(fmt.Errorf("peer presented no certificate"))
	}
	id, err := creds.VerifyPeer(chain)
	if err != nil {
		return identity.ID{}, withAlert(fmt.Errorf("verify peer certificate (serial %x): %w", chain[0].SerialNumber, err))
	}
	if err := role(id); err != nil {
		return identity.ID{}, withAlert(fmt.Errorf("%w: %s: %w", ErrNotAuthorized, id, err))
	}
	return id, nil
}

// udpBufferSize is the socket buffer quic-go asks for (7 MiB); below it,
// bursts are dropped on receive and throughput collapses.
const udpBufferSize = 7 << 20

// udpBufferOnce is process-wide because the limits it checks are.
var udpBufferOnce sync.Once

// ensureUDPBufferLimits raises net.core.rmem_max and wmem_max to what
// quic-go needs when they are lower and this process is root, and otherwise
// says once what to set.
func ensureUDPBufferLimits(log *slog.Logger) {
	udpBufferOnce.Do(func() {
		for _, name := range []string{"rmem_max", "wmem_max"} {
			path := "/proc/sys/net/core/" + name
			b, err := os.ReadFile(path)
			if err != nil {
				continue // not Linux, or not visible here
			}
			cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || cur >= udpBufferSize {
				continue
			}
			if os.Geteuid() == 0 {
				if err := os.WriteFile(path, []byte(strconv.Itoa(udpBufferSize)), 0o644); err == nil {
					log.Info("raised UDP socket buffer limit for QUIC", "sysctl", "net.core."+name, "from", cur, "to", udpBufferSize)
					continue
				}
			}
			log.Warn("UDP socket buffer limit is below what QUIC needs; throughput will suffer",
				"sysctl", "net.core."+name, "value", cur,
				"fix", fmt.Sprintf("sysctl -w net.core.%s=%d", name, udpBufferSize))
		}
	})
}

func loggerOr(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
