// Package transport is how Nexus machines talk to each other: QUIC
// (quic-go) connections authenticated in both directions with TLS 1.3 and
// carrying framed request/response and streaming calls.
//
// Why QUIC: one connection per peer multiplexes every call on its own
// stream, so a slow watch never blocks a heartbeat (no head-of-line blocking
// as with one TCP connection); connections survive address changes; and
// datagrams give the mesh and the encrypted overlay an unreliable channel
// under the same keys and identity.
//
// Trust is not decided here. Every handshake asks a Credentials for this
// endpoint's current certificate and hands the peer's chain back to it to
// verify (bundle, validity, revocation), so renewals and CA rotations take
// effect on the next handshake without restarts. Go's built-in verification
// is switched off for that reason, not skipped: Credentials.VerifyPeer is
// the verification. On top of it the transport binds the identity to the
// role: a Dialer checks the identity it expected (Target.Verify), a Listener
// asks its Authorize function whether that identity may speak the service
// (ALPN) it asked for. When the trust bundle or the revocation list changes,
// every live connection is verified again and closed if it no longer passes.
//
// One Listener serves several services told apart by ALPN ("nexus-store",
// "nexus-agent", "nexus-mesh", ...). A Dialer keeps one connection per
// (service, address), shared by concurrent calls, each on its own stream,
// and redials with exponential backoff and jitter when it breaks.
//
// The wire format on a stream is a sequence of frames (see Framer): a call
// frame naming the method, message frames, and an error frame that carries
// a handler's error back to the caller. A frame larger than MaxFrameSize is
// refused with an error that says so.
//
// 0-RTT is refused for now: 0-RTT data can be replayed by anyone who
// captured it, and in TLS 1.3 the client certificate arrives after it, so
// the server would run a request before knowing who sent it (session
// tickets would carry the identity, but not a revocation since). Calls may
// be marked Idempotent today; the flag lets the Dialer retry them on a fresh
// connection, and is what a future 0-RTT path would key on. Session
// resumption is off as well so every connection presents, and has verified,
// the current certificate.
package transport
