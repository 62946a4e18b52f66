package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
)

// Methods of the raft service.
const (
	methodMessages = "messages" // client stream: batches of raft messages, no response
	methodSnapshot = "snapshot" // client stream: a MsgSnap, then the file in chunks; one response
)

const (
	// maxBatchBytes bounds one batch frame, well under the transport's
	// default frame limit.
	maxBatchBytes = 2 << 20
	snapChunk     = 512 << 10
	dialTimeout   = 2 * time.Second
	// snapshotTimeout bounds one snapshot transfer; raft retries later.
	snapshotTimeout = 5 * time.Minute
)

// reporter is the part of the raft node a peer sender reports to.
type reporter interface {
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
	// LastAnswer is when a response message (MsgAppResp, MsgHeartbeatResp,
	// …) from id last arrived (zero if never).
	LastAnswer(id uint64) time.Time
}

// peer sends raft messages to one member. Send never blocks: messages go
// to a bounded queue drained by the peer's goroutine onto one long-lived
// stream, batched while the stream is busy.
type peer struct {
	id     uint64
	cfg    *Config
	snaps  *snapStore
	report reporter
	log    *slog.Logger

	mu   sync.Mutex
	addr string

	conn   *transport.Conn // of the current stream, owned by run
	q      chan *pb.Message
	snapMu sync.Mutex // one snapshot transfer at a time
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newPeer(id uint64, addr string, cfg *Config, snaps *snapStore, report reporter) *peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{
		id: id, addr: addr, cfg: cfg, snaps: snaps, report: report,
		log: cfg.Logger.With("peer", fmt.Sprintf("%x", id)),
		q:   make(chan *pb.Message, cfg.PeerQueue),
		ctx: ctx, cancel: cancel,
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *peer) setAddr(addr string) {
	p.mu.Lock()
	p.addr = addr
	p.mu.Unlock()
}

func (p *peer) target() transport.Target {
	p.mu.Lock()
	defer p.mu.Unlock()
	return transport.Target{
		Addr:    p.addr,
		Service: ALPN,
		Verify:  AuthorizePeer(p.cfg.Transport.Cluster),
	}
}

// send queues m, or drops it and reports the peer unreachable when the
// queue is full.
func (p *peer) send(m *pb.Message) {
	if m.GetType() == pb.MsgSnap {
		p.wg.Add(1)
		go p.sendSnapshot(m)
		return
	}
	select {
	case p.q <- m:
	default:
		p.report.ReportUnreachable(p.id)
	}
}

func (p *peer) stop() {
	p.cancel()
	p.wg.Wait()
}

// removedPeerFlush bounds how long the sender of a removed member may go
// on delivering what was queued for it.
const removedPeerFlush = time.Second

// stopWhenSent stops the sender once its queue is empty (and the batch in
// hand had a moment to go out), or after d at the latest.
func (p *peer) stopWhenSent(d time.Duration) {
	deadline := time.Now().Add(d)
	for len(p.q) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if time.Now().Before(deadline) {
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
	}
	p.stop()
}

func (p *peer) run() {
	defer p.wg.Done()
	var st *transport.Stream
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	var buf []byte
	// asked is when the oldest request still without any answer from the
	// peer went out on the current stream.
	var asked time.Time
	for {
		var m *pb.Message
		select {
		case <-p.ctx.Done():
			return
		case m = <-p.q:
		}
		buf = appendMessage(buf[:0], m)
		hasRequest := expectsAnswer(m)
	drain:
		for len(buf) < maxBatchBytes {
			select {
			case m = <-p.q:
				buf = appendMessage(buf, m)
				hasRequest = hasRequest || expectsAnswer(m)
			default:
				break drain
			}
		}
		if st == nil {
			var err error
			if st, err = p.open(); err != nil {
				p.log.Debug("raft peer unreachable", "err", err)
				p.report.ReportUnreachable(p.id)
				continue
			}
			asked = time.Time{}
		}
		if err := st.Send(buf); err != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.log.Debug("raft stream to peer broke", "err", err)
			st.Close()
			st = nil
			p.report.ReportUnreachable(p.id)
			continue
		}
		// A QUIC stream accepts writes into its buffers whether or not the
		// peer still receives them (a peer that restarted on the same
		// address can leave the old connection half alive until its idle
		// timeout). Appends, heartbeats and read-index requests are always
		// answered by a live peer, so a stream whose requests have gone
		// unanswered for a while is replaced, with its connection, and the
		// next message dials afresh. Any message from the peer does not do:
		// a peer that receives nothing still sends us its pre-votes.
		if answered := p.report.LastAnswer(p.id); !asked.IsZero() && answered.After(asked) {
			asked = time.Time{}
		}
		if hasRequest && asked.IsZero() {
			asked = time.Now()
		}
		if stale := p.staleAfter(); !asked.IsZero() && time.Since(asked) > stale {
			p.log.Info("raft peer has not answered; reconnecting", "unanswered_for", time.Since(asked).Round(time.Millisecond))
			st.Close()
			if p.conn != nil {
				p.conn.Close()
			}
			st = nil
			p.report.ReportUnreachable(p.id)
		}
	}
}

// expectsAnswer reports whether a live peer always answers m.
func expectsAnswer(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgApp, pb.MsgHeartbeat, pb.MsgReadIndex:
		return true
	}
	return false
}

// staleAfter is how long a stream may go unanswered: two election timeouts.
func (p *peer) staleAfter() time.Duration {
	return 2 * time.Duration(p.cfg.ElectionTicks) * p.cfg.TickInterval
}

func (p *peer) open() (*transport.Stream, error) {
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	defer cancel()
	c, err := p.cfg.Transport.Dialer.Conn(ctx, p.target())
	if err != nil {
		return nil, err
	}
	p.conn = c
	// The stream lives as long as the peer sender, not the dial.
	return c.Stream(p.ctx, methodMessages, nil)
}

func (p *peer) sendSnapshot(m *pb.Message) {
	defer p.wg.Done()
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	meta := m.GetSnapshot().GetMetadata()
	err := p.streamSnapshot(m)
	if err != nil {
		if p.ctx.Err() != nil {
			return
		}
		p.log.Warn("raft snapshot send failed; raft will retry", "index", meta.GetIndex(), "err", err)
		p.report.ReportUnreachable(p.id)
		p.report.ReportSnapshot(p.id, raft.SnapshotFailure)
		return
	}
	p.log.Info("raft snapshot sent", "index", meta.GetIndex(), "term", meta.GetTerm())
	p.report.ReportSnapshot(p.id, raft.SnapshotFinish)
}

func (p *peer) streamSnapshot(m *pb.Message) error {
	meta := m.GetSnapshot().GetMetadata()
	f, err := os.Open(p.snaps.path(meta.GetTerm(), meta.GetIndex()))
	if err != nil {
		return fmt.Errorf("open snapshot to send: %w", err)
	}
	defer f.Close()
	head, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, snapshotTimeout)
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
	c, err := p.cfg.Transport.Dialer.Conn(dctx, p.target())
	dcancel()
	if err != nil {
		return err
	}
	st, err := c.Stream(ctx, methodSnapshot, head)
	if err != nil {
		return err
	}
	defer st.Close()
	buf := make([]byte, snapChunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if err := st.Send(buf[:n]); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read snapshot to send: %w", err)
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	if _, err := st.Recv(); err != nil {
		return fmt.Errorf("peer did not accept the snapshot: %w", err)
	}
	return nil
}

func appendMessage(b []byte, m *pb.Message) []byte {
	mb, err := proto.Marshal(m)
	if err != nil {
		// Messages raft produced always marshal.
		panic(fmt.Sprintf("marshal raft message: %v", err))
	}
	b = binary.AppendUvarint(b, uint64(len(mb)))
	return append(b, mb...)
}

func decodeBatch(b []byte, step func(*pb.Message) error) error {
	for len(b) > 0 {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return errors.New("bad raft message batch")
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(b[n:n+int(l)], m); err != nil {
			return fmt.Errorf("decode raft message: %w", err)
		}
		b = b[n+int(l):]
		if err := step(m); err != nil {
			return err
		}
	}
	return nil
}

// Service returns the raft service for ALPN, to register on the member's
// listener. It accepts only server identities of the cluster, whatever the
// listener's Authorize said.
func (n *Node) Service() transport.Service {
	return transport.Service{StreamHandler: transport.StreamHandlerFunc(n.serveStream)}
}

func (n *Node) serveStream(ctx context.Context, peer identity.ID, method string, s *transport.ServerStream) error {
	if err := AuthorizePeer(n.cfg.Transport.Cluster)(peer); err != nil {
		return err
	}
	switch method {
	case methodMessages:
		for {
			b, err := s.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := decodeBatch(b, func(m *pb.Message) error {
				if raft.IsResponseMsg(m.GetType()) {
					n.noteAnswer(m.GetFrom())
				}
				return n.step(ctx, m)
			}); err != nil {
				return err
			}
		}
	case methodSnapshot:
		return n.receiveSnapshot(ctx, s)
	default:
		return &transport.RemoteError{Code: transport.CodeUnimplemented, Message: "no raft method " + method}
	}
}

// noteAnswer records that a response from id arrived.
func (n *Node) noteAnswer(id uint64) {
	v, ok := n.heard.Load(id)
	if !ok {
		v, _ = n.heard.LoadOrStore(id, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(time.Now().UnixNano())
}

// LastAnswer is when a response from id last arrived.
func (n *Node) LastAnswer(id uint64) time.Time {
	if v, ok := n.heard.Load(id); ok {
		return time.Unix(0, v.(*atomic.Int64).Load())
	}
	return time.Time{}
}

func (n *Node) step(ctx context.Context, m *pb.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.in.step(m); err != nil {
		return errors.New("raft member stopped")
	}
	return nil
}

// receiveSnapshot writes the streamed file next to the member's snapshots,
// verifies it, installs it, and only then hands raft the MsgSnap, so the
// Ready that carries the snapshot finds its file in place.
func (n *Node) receiveSnapshot(ctx context.Context, s *transport.ServerStream) error {
	m := &pb.Message{}
	if err := proto.Unmarshal(s.Request(), m); err != nil || m.GetType() != pb.MsgSnap {
		return fmt.Errorf("snapshot stream does not start with a MsgSnap: %v", err)
	}
	meta := m.GetSnapshot().GetMetadata()
	tmp, err := os.CreateTemp(n.snaps.dir, "recv-*.tmp")
	if err != nil {
		return fmt.Errorf("receive snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	for {
		b, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("receive snapshot: %w", err)
		}
		if _, err := tmp.Write(b); err != nil {
			return fmt.Errorf("receive snapshot: %w", err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("receive snapshot: %w", err)
	}
	if _, err := loadSnap(tmp.Name(), meta); err != nil {
		return err
	}
	if err := n.snaps.install(tmp.Name(), n.snaps.path(meta.GetTerm(), meta.GetIndex())); err != nil {
		return err
	}
	n.log.Info("raft snapshot received", "from", fmt.Sprintf("%x", m.GetFrom()), "index", meta.GetIndex(), "term", meta.GetTerm())
	if err := n.step(ctx, m); err != nil {
		return err
	}
	return s.Send([]byte("ok"))
}
