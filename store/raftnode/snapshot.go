package raftnode

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A snapshot file, "<term>-<index>.snap" (16 hex digits each):
//
//	magic "NXSNAP01"
//	uint32 length, raftpb.SnapshotMetadata (protobuf)
//	uint32 length, the member list (JSON)
//	the state machine's snapshot bytes
//	uint32 CRC-32C of everything before it
//
// Integers are little endian. The file is written under a temporary name,
// fsynced and renamed, and the WAL records a marker for it only after that,
// so recovery never trusts a half-written snapshot.
const snapMagic = "NXSNAP01"

var snapCRC = crc32.MakeTable(crc32.Castagnoli)

type snapStore struct {
	dir string
}

// snapFile is a verified snapshot file.
type snapFile struct {
	path     string
	meta     *pb.SnapshotMetadata
	members  []Member
	dataOff  int64
	dataSize int64
}

func snapName(term, index uint64) string { return fmt.Sprintf("%016x-%016x.snap", term, index) }

func (s *snapStore) path(term, index uint64) string {
	return filepath.Join(s.dir, snapName(term, index))
}

// save writes a snapshot file whose state machine part is produced by data.
func (s *snapStore) save(meta *pb.SnapshotMetadata, members []Member, data func(io.Writer) error) error {
	final := s.path(meta.GetTerm(), meta.GetIndex())
	tmp, err := os.CreateTemp(s.dir, "save-*.tmp")
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("save snapshot %s: %w", final, err)
	}
	crc := crc32.New(snapCRC)
	bw := bufio.NewWriterSize(io.MultiWriter(tmp, crc), 256<<10)
	if err := writeSnapHeader(bw, meta, members); err != nil {
		return fail(err)
	}
	if err := data(bw); err != nil {
		return fail(fmt.Errorf("state machine snapshot: %w", err))
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	return s.install(tmp.Name(), final)
}

func (s *snapStore) install(tmp, final string) error {
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install snapshot %s: %w", final, err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("install snapshot %s: %w", final, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("install snapshot %s: sync dir: %w", final, err)
	}
	return nil
}

func writeSnapHeader(w io.Writer, meta *pb.SnapshotMetadata, members []Member) error {
	mb, err := proto.Marshal(meta)
	if err != nil {
		return err
	}
	jb, err := json.Marshal(members)
	if err != nil {
		return err
	}
	b := []byte(snapMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(mb)))
	b = append(b, mb...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(jb)))
	b = append(b, jb...)
	_, err = w.Write(b)
	return err
}

// load reads and verifies the snapshot file at path: its checksum, its
// header and, when want is not nil, that it is the snapshot want names.
func loadSnap(path string, want *pb.SnapshotMetadata) (*snapFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	size := fi.Size()
	bad := func(why string) error { return fmt.Errorf("snapshot %s is damaged: %s", path, why) }
	if size < int64(len(snapMagic))+12 {
		return nil, bad("too short")
	}
	crc := crc32.New(snapCRC)
	if _, err := io.CopyN(crc, f, size-4); err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	var tail [4]byte
	if _, err := io.ReadFull(f, tail[:]); err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	if crc.Sum32() != binary.LittleEndian.Uint32(tail[:]) {
		return nil, bad("checksum mismatch")
	}
	r := bufio.NewReader(io.NewSectionReader(f, 0, size-4))
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapMagic {
		return nil, bad("bad magic")
	}
	readPart := func() ([]byte, error) {
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, err
		}
		n := binary.LittleEndian.Uint32(l[:])
		if int64(n) > size {
			return nil, errors.New("header length past the end")
		}
		p := make([]byte, n)
		_, err := io.ReadFull(r, p)
		return p, err
	}
	mb, err := readPart()
	if err != nil {
		return nil, bad(err.Error())
	}
	jb, err := readPart()
	if err != nil {
		return nil, bad(err.Error())
	}
	sf := &snapFile{path: path, meta: &pb.SnapshotMetadata{}}
	if err := proto.Unmarshal(mb, sf.meta); err != nil {
		return nil, bad("metadata: " + err.Error())
	}
	pb.EnsureSnapshotMetadata(sf.meta)
	if err := json.Unmarshal(jb, &sf.members); err != nil {
		return nil, bad("members: " + err.Error())
	}
	sf.dataOff = int64(len(snapMagic)) + 8 + int64(len(mb)) + int64(len(jb))
	sf.dataSize = size - 4 - sf.dataOff
	if want != nil && (sf.meta.GetIndex() != want.GetIndex() || sf.meta.GetTerm() != want.GetTerm()) {
		return nil, bad(fmt.Sprintf("holds index %d term %d, want index %d term %d",
			sf.meta.GetIndex(), sf.meta.GetTerm(), want.GetIndex(), want.GetTerm()))
	}
	return sf, nil
}

// restore feeds the state machine part of the file to restore.
func (sf *snapFile) restore(restore func(io.Reader) error) error {
	f, err := os.Open(sf.path)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.NewSectionReader(f, sf.dataOff, sf.dataSize), 256<<10)
	if err := restore(r); err != nil {
		return fmt.Errorf("restore state machine from %s: %w", sf.path, err)
	}
	return nil
}

// removeTemp deletes the temporary files of saves and receives a crash
// interrupted; it runs before the member starts.
func (s *snapStore) removeTemp() {
	tmps, _ := filepath.Glob(filepath.Join(s.dir, "*.tmp"))
	for _, t := range tmps {
		os.Remove(t)
	}
}

// purge deletes all but the newest keep snapshot files.
func (s *snapStore) purge(keep int) error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("purge snapshots: %w", err)
	}
	var snaps []string
	for _, de := range des {
		if name := de.Name(); strings.HasSuffix(name, ".snap") {
			snaps = append(snaps, name)
		}
	}
	// Names are fixed-width hex term then index, so they sort by age.
	sort.Strings(snaps)
	for len(snaps) > keep {
		if err := os.Remove(filepath.Join(s.dir, snaps[0])); err != nil {
			return fmt.Errorf("purge snapshots: %w", err)
		}
		snaps = snaps[1:]
	}
	return nil
}
