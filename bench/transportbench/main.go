// Command transportbench compares the QUIC transport with TCP + TLS 1.3 on
// loopback: the same certificates, the same verification and the same
// framing (transport.Framer), interleaved batch by batch. It measures the
// round trip of a unary call and the throughput of one client stream.
// bench/transport runs it; see docs/benchmarks.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
	"nexus.dev/nexus/transport/transporttest"
)

const service = "nexus-bench"

var (
	serverID = identity.Server("bench.nexus", "s1")
	clientID = identity.Node("bench.nexus", "n1")
)

func main() {
	n := flag.Int("n", 5000, "timed round trips per transport")
	warmup := flag.Int("warmup", 500, "untimed round trips per transport first")
	batch := flag.Int("batch", 250, "round trips per batch; batches alternate between transports")
	size := flag.Int("size", 1024, "payload bytes per round trip")
	bulkMiB := flag.Int("bulk", 256, "MiB streamed per transport")
	chunk := flag.Int("chunk", 64<<10, "bytes per message when streaming")
	flag.Parse()
	if err := run(*n, *warmup, *batch, *size, *bulkMiB, *chunk); err != nil {
		log.Fatalf("transportbench: %v", err)
	}
}

type side struct {
	name string
	call func(req []byte) ([]byte, error)
	bulk func(total, chunk int) error
}

func run(n, warmup, batch, size, bulkMiB, chunk int) error {
	ca, err := transporttest.NewCA("bench root")
	if err != nil {
		return err
	}
	sc, err := ca.IssueValid(serverID)
	if err != nil {
		return err
	}
	cc, err := ca.IssueValid(clientID)
	if err != nil {
		return err
	}
	serverCreds := transporttest.NewCredentials(ca, sc)
	clientCreds := transporttest.NewCredentials(ca, cc)

	q, reuse, closeQ, err := quicSide(serverCreds, clientCreds)
	if err != nil {
		return err
	}
	defer closeQ()
	tc, closeT, err := tcpSide(serverCreds, clientCreds)
	if err != nil {
		return err
	}
	defer closeT()
	sides := []*side{q, tc, reuse}

	req := make([]byte, size)
	for _, s := range sides {
		for range warmup {
			if _, err := s.call(req); err != nil {
				return fmt.Errorf("%s warm-up: %w", s.name, err)
			}
		}
	}
	lat := map[string][]time.Duration{}
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		for _, s := range sides {
			for range k {
				t0 := time.Now()
				resp, err := s.call(req)
				d := time.Since(t0)
				if err != nil {
					return fmt.Errorf("%s call: %w", s.name, err)
				}
				if len(resp) != size {
					return fmt.Errorf("%s: response of %d bytes, want %d", s.name, len(resp), size)
				}
				lat[s.name] = append(lat[s.name], d)
			}
		}
	}

	// Bulk: rounds of 64 MiB (or less), alternating.
	total := bulkMiB << 20
	round := min(total, 64<<20)
	elapsed := map[string]time.Duration{}
	for sent := 0; sent < total; sent += round {
		k := min(round, total-sent)
		for _, s := range sides {
			if s.bulk == nil {
				continue
			}
			t0 := time.Now()
			if err := s.bulk(k, chunk); err != nil {
				return fmt.Errorf("%s bulk: %w", s.name, err)
			}
			elapsed[s.name] += time.Since(t0)
		}
	}

	fmt.Printf("round trip of a unary call, %d-byte request and response, %d sequential calls each, interleaved in batches of %d (after %d warm-up calls each), in µs:\n", size, n, batch, warmup)
	fmt.Printf("%-10s %9s %9s %9s %9s %9s\n", "transport", "p50", "p90", "p99", "mean", "max")
	stats := map[string][5]float64{}
	for _, s := range sides {
		st := summarize(lat[s.name])
		stats[s.name] = st
		fmt.Printf("%-10s %9.1f %9.1f %9.1f %9.1f %9.1f\n", s.name, st[0], st[1], st[2], st[3], st[4])
	}
	a, b := stats[q.name], stats[tc.name]
	fmt.Printf("ratio %s/%s: p50 %.2f  p90 %.2f  p99 %.2f  mean %.2f\n", q.name, tc.name, a[0]/b[0], a[1]/b[1], a[2]/b[2], a[3]/b[3])
	a = stats[reuse.name]
	fmt.Printf("ratio %s/%s: p50 %.2f  p90 %.2f  p99 %.2f  mean %.2f  (one stream reused for all calls)\n\n", reuse.name, tc.name, a[0]/b[0], a[1]/b[1], a[2]/b[2], a[3]/b[3])

	fmt.Printf("bulk: %d MiB streamed client -> server in %d-byte messages, in rounds of %d MiB, interleaved:\n", bulkMiB, chunk, round>>20)
	rate := map[string]float64{}
	for _, s := range sides[:2] {
		rate[s.name] = float64(total) / (1 << 20) / elapsed[s.name].Seconds()
		fmt.Printf("%-10s %9.0f MiB/s  (%v)\n", s.name, rate[s.name], elapsed[s.name].Round(time.Millisecond))
	}
	fmt.Printf("ratio %s/%s: %.2f\n", q.name, tc.name, rate[q.name]/rate[tc.name])
	return nil
}

// summarize returns p50, p90, p99, mean and max in µs.
func summarize(d []time.Duration) [5]float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
	pct := func(p float64) float64 { return us(s[min(len(s)-1, int(p*float64(len(s))))]) }
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return [5]float64{pct(0.50), pct(0.90), pct(0.99), us(sum / time.Duration(len(s))), us(s[len(s)-1])}
}

func quicSide(serverCreds, clientCreds transport.Credentials) (*side, *side, func(), error) {
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := transport.Listen(transport.ListenerConfig{
		Addr:        "[::1]:0",
		Credentials: serverCreds,
		Authorize:   func(identity.ID, string) error { return nil },
		Logger:      quiet,
		Services: map[string]transport.Service{service: {
			Handler: transport.HandlerFunc(func(_ context.Context, _ identity.ID, _ string, req []byte) ([]byte, error) {
				return req, nil
			}),
			StreamHandler: transport.StreamHandlerFunc(func(_ context.Context, _ identity.ID, method string, s *transport.ServerStream) error {
				n := 0
				for {
					m, err := s.Recv()
					if errors.Is(err, io.EOF) {
						return s.Send([]byte(strconv.Itoa(n)))
					}
					if err == nil && method == "echo-stream" {
						err = s.Send(m)
					}
					if err != nil {
						return err
					}
					n += len(m)
				}
			}),
		}},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	go l.Serve(context.Background())
	d, err := transport.NewDialer(transport.DialerConfig{Credentials: clientCreds, Logger: quiet})
	if err != nil {
		l.Close()
		return nil, nil, nil, err
	}
	tgt := transport.Target{Addr: l.Addr().String(), Service: service, Verify: transport.ExpectID(serverID)}
	ctx := context.Background()
	c, err := d.Conn(ctx, tgt)
	if err != nil {
		return nil, nil, nil, err
	}
	// The tuning variant: one long-lived stream carrying every call, as
	// the TCP side does, to show what opening a stream per call costs.
	one, err := c.Stream(ctx, "echo-stream", nil)
	if err != nil {
		return nil, nil, nil, err
	}
	reuse := &side{
		name: "quic-1str",
		call: func(req []byte) ([]byte, error) {
			if err := one.Send(req); err != nil {
				return nil, err
			}
			return one.Recv()
		},
	}
	s := &side{
		name: "quic",
		call: func(req []byte) ([]byte, error) { return c.Call(ctx, "echo", req) },
		bulk: func(total, chunk int) error {
			st, err := c.Stream(ctx, "sink", nil)
			if err != nil {
				return err
			}
			defer st.Close()
			buf := make([]byte, chunk)
			for sent := 0; sent < total; sent += chunk {
				if err := st.Send(buf[:min(chunk, total-sent)]); err != nil {
					return err
				}
			}
			st.CloseSend()
			resp, err := st.Recv()
			if err != nil {
				return err
			}
			if string(resp) != strconv.Itoa(total) {
				return fmt.Errorf("server received %s bytes, want %d", resp, total)
			}
			return nil
		},
	}
	return s, reuse, func() { one.Close(); d.Close(); l.Close() }, nil
}

// tcpSide serves the same framing over one TCP + TLS 1.3 connection. With
// no streams to end, a zero-length message ends a client stream.
func tcpSide(serverCreds, clientCreds transport.Credentials) (*side, func(), error) {
	verify := func(creds transport.Credentials) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			_, err := creds.VerifyPeer(cs.PeerCertificates)
			return err
		}
	}
	scfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		GetCertificate:         func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serverCreds.GetCertificate() },
		VerifyConnection:       verify(serverCreds),
	}
	ln, err := tls.Listen("tcp", "[::1]:0", scfg)
	if err != nil {
		return nil, nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveTCP(c)
		}
	}()
	ccfg := &tls.Config{
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true, // VerifyConnection below is the verification, as in transport
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCreds.GetCertificate() },
		VerifyConnection:     verify(clientCreds),
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), ccfg)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	f := transport.NewFramer(conn, conn, 0)
	s := &side{
		name: "tcp+tls",
		call: func(req []byte) ([]byte, error) {
			if err := f.WriteCall(transport.KindUnary, "echo", req); err != nil {
				return nil, err
			}
			return f.ReadResponse()
		},
		bulk: func(total, chunk int) error {
			if err := f.WriteCall(transport.KindStream, "sink", nil); err != nil {
				return err
			}
			buf := make([]byte, chunk)
			for sent := 0; sent < total; sent += chunk {
				if err := f.WriteMessage(buf[:min(chunk, total-sent)]); err != nil {
					return err
				}
			}
			if err := f.WriteMessage(nil); err != nil {
				return err
			}
			resp, err := f.ReadResponse()
			if err != nil {
				return err
			}
			if string(resp) != strconv.Itoa(total) {
				return fmt.Errorf("server received %s bytes, want %d", resp, total)
			}
			return nil
		},
	}
	return s, func() { conn.Close(); ln.Close() }, nil
}

func serveTCP(c net.Conn) {
	defer c.Close()
	f := transport.NewFramer(c, c, 0)
	for {
		typ, body, err := f.ReadFrame()
		if err != nil || typ != transport.FrameCall {
			return
		}
		kind, _, payload, err := transport.ParseCall(body)
		if err != nil {
			return
		}
		if kind == transport.KindUnary {
			if err := f.WriteMessage(payload); err != nil {
				return
			}
			continue
		}
		n := 0
		for {
			typ, m, err := f.ReadFrame()
			if err != nil || typ != transport.FrameMessage {
				return
			}
			if len(m) == 0 {
				break
			}
			n += len(m)
		}
		if err := f.WriteMessage([]byte(strconv.Itoa(n))); err != nil {
			return
		}
	}
}
