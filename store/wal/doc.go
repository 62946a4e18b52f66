// Package wal is the write-ahead log under a raft member: the entries and
// HardState a raft Ready asks to persist, written as one checksummed frame
// per Ready and made durable with one fdatasync (group commit: every
// proposal that reached raft while the previous fsync ran shares the next).
//
// The log is a directory of segment files, "<seq>.wal" (16 hex digits).
// A segment is reserved to SegmentSize up front (fallocate), so a full
// disk shows when a segment is made and an append never grows the file;
// the next segment is prepared in the background, so a cut does not stall
// appends. (Writing the reserved space with zeros first was tried and
// measured no faster on ext4: see createSegmentFile.) A segment starts with a magic number and a frame
// restating the newest HardState and snapshot marker, so the segments
// before it can be deleted once a snapshot covers their entries.
//
// Frame layout (little endian):
//
//	len    uint32  payload length
//	^len   uint32  its complement: a header that is not garbage
//	crc    uint32  CRC-32C (Castagnoli) of the payload
//	payload        records: type (1 byte), body length (uvarint), body
//
// Record bodies are uvarints: an entry is term, index, entry type, then the
// data; a HardState is term, vote, commit; a snapshot marker is index, term.
// Twelve zero bytes (the preallocated tail) end a segment. Replay reads a
// segment a frame at a time and stops there, so opening a log costs memory
// for its frames, not for the mostly empty reserved segments.
//
// Recovery tells a crash from damage. A bad frame in the last segment whose
// header is intact and after which the file holds only zeros is the torn
// tail of a write that never completed its fsync, so nothing was
// acknowledged from it: it is cut off and logged. Anything else — a bad
// frame followed by data, a garbled header, a bad frame in an older
// segment — is corruption, and Open refuses with the file and offset rather
// than guess which entries are lost.
package wal
