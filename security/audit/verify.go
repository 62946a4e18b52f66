package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
)

// ProblemKind classifies what Verify found.
type ProblemKind string

const (
	// ProblemEdited: a record's bytes no longer match its hash.
	ProblemEdited ProblemKind = "edited"
	// ProblemMalformed: a line that is not a record at all.
	ProblemMalformed ProblemKind = "malformed"
	// ProblemMissing: seq skips numbers (records or a whole file deleted).
	ProblemMissing ProblemKind = "missing"
	// ProblemReordered: seq goes backwards (records moved or repeated).
	ProblemReordered ProblemKind = "reordered"
	// ProblemBrokenLink: seq follows on but prev is not the previous hash.
	ProblemBrokenLink ProblemKind = "broken-link"
	// ProblemTorn: a file ends in an incomplete line.
	ProblemTorn ProblemKind = "torn"
	// ProblemCutFile: a rotated file holds fewer records than its name says.
	ProblemCutFile ProblemKind = "cut-file"
)

// Problem is the first thing wrong with a chain, and where.
type Problem struct {
	Kind ProblemKind `json:"kind"`
	File string      `json:"file"`
	// Line is 1-based.
	Line   int    `json:"line"`
	Offset int64  `json:"offset"`
	Seq    uint64 `json:"seq,omitempty"`
	Detail string `json:"detail"`
}

func (p *Problem) Error() string {
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Detail)
}

// FileRange is one verified file.
type FileRange struct {
	Path        string `json:"path"`
	First       uint64 `json:"first,omitempty"`
	Last        uint64 `json:"last,omitempty"`
	Records     int    `json:"records"`
	firstParsed bool
}

// Report is what Verify found. Problem is nil when the chain is intact.
type Report struct {
	Files   []FileRange `json:"files"`
	Records int         `json:"records"`
	First   uint64      `json:"first,omitempty"`
	Last    uint64      `json:"last,omitempty"`
	// Anchor is the first record's prev: ZeroHash when the chain starts at
	// the log's first record, else the hash of a record rotated away (or in
	// a file not given), which Verify has to trust.
	Anchor string `json:"anchor,omitempty"`
	// Head is the last record's hash.
	Head    string   `json:"head,omitempty"`
	Problem *Problem `json:"problem,omitempty"`
}

var rotatedRE = regexp.MustCompile(`^audit-([0-9]{1,20})-([0-9]{1,20})\.log$`)

func rotatedName(first, last uint64) string { return fmt.Sprintf("audit-%d-%d.log", first, last) }

type rotatedFile struct {
	path        string
	first, last uint64
}

// rotatedFiles lists dir's rotated files, oldest first.
func rotatedFiles(dir string) ([]rotatedFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []rotatedFile
	for _, e := range ents {
		if first, last, ok := parseRotatedName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, rotatedFile{path: filepath.Join(dir, e.Name()), first: first, last: last})
		}
	}
	slices.SortFunc(out, func(a, b rotatedFile) int { return cmpUint(a.first, b.first) })
	return out, nil
}

func parseRotatedName(name string) (first, last uint64, ok bool) {
	m := rotatedRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(m[1], 10, 64)
	last, err2 := strconv.ParseUint(m[2], 10, 64)
	return first, last, err1 == nil && err2 == nil && first > 0 && first <= last
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Files returns the audit files of a log directory, oldest first: the
// rotated files, then audit.log if it exists.
func Files(dir string) ([]string, error) {
	rot, err := rotatedFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("list audit files: %w", err)
	}
	var out []string
	for _, r := range rot {
		out = append(out, r.path)
	}
	cur := filepath.Join(dir, CurrentFile)
	if _, err := os.Stat(cur); err == nil {
		out = append(out, cur)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list audit files: %w", err)
	}
	return out, nil
}

// Verify checks that files hold one unbroken chain and reports the first
// problem in chain order. Files may be given in any order: they are put in
// order of their first record's seq. The error is for files that cannot
// be read; what is wrong inside them is Report.Problem.
func Verify(files ...string) (Report, error) {
	if len(files) == 0 {
		return Report{}, errors.New("verify audit log: no files given")
	}
	var rep Report
	for _, path := range files {
		fr, prob, err := firstSeq(path)
		if err != nil {
			return Report{}, err
		}
		if prob != nil {
			rep.Problem = prob
			return rep, nil
		}
		rep.Files = append(rep.Files, fr)
	}
	// Files with no record have nothing to order and go first.
	slices.SortStableFunc(rep.Files, func(a, b FileRange) int {
		if a.firstParsed != b.firstParsed {
			if a.firstParsed {
				return 1
			}
			return -1
		}
		return cmpUint(a.First, b.First)
	})
	var c chain
	for i := range rep.Files {
		prob, err := c.file(&rep.Files[i])
		if err != nil {
			return Report{}, err
		}
		if prob == nil {
			prob = c.endFile(&rep.Files[i])
		}
		if prob != nil {
			rep.Problem = prob
			break
		}
	}
	if rep.Problem == nil {
		rep.Problem = c.end()
	}
	rep.Records, rep.First, rep.Last, rep.Anchor, rep.Head = c.records, c.firstSeq, c.last.seq, c.anchor, c.last.hash
	return rep, nil
}

// firstSeq reads the first record's seq of path, to order the files.
func firstSeq(path string) (FileRange, *Problem, error) {
	fr := FileRange{Path: path}
	f, err := os.Open(path)
	if err != nil {
		return fr, nil, fmt.Errorf("verify audit log: %w", err)
	}
	defer f.Close()
	line, complete, err := readLine(bufio.NewReader(f))
	if err != nil && err != io.EOF {
		return fr, nil, fmt.Errorf("verify audit log: read %s: %w", path, err)
	}
	if len(line) == 0 && !complete {
		return fr, nil, nil // empty
	}
	if !complete {
		return fr, tornProblem(path, 1, 0, line), nil
	}
	p, perr := parseLine(line)
	if perr != nil {
		return fr, &Problem{Kind: ProblemMalformed, File: path, Line: 1, Detail: fmt.Sprintf("%v (edited or damaged; cannot place the file in the chain)", perr)}, nil
	}
	fr.First, fr.firstParsed = p.seq, true
	return fr, nil, nil
}

func tornProblem(path string, line int, off int64, b []byte) *Problem {
	return &Problem{Kind: ProblemTorn, File: path, Line: line, Offset: off,
		Detail: fmt.Sprintf("incomplete last line (%d bytes without a line end): the file was cut short, or a write is in progress", len(b))}
}

// readLine reads one line without its newline. complete is false for a
// last line without newline. A line longer than MaxLineBytes is returned
// cut at MaxLineBytes+1 bytes, which parseLine refuses.
func readLine(r *bufio.Reader) (line []byte, complete bool, err error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxLineBytes+1 {
			return append(buf, chunk[:MaxLineBytes+1-len(buf)]...), true, nil
		}
		buf = append(buf, chunk...)
		switch err {
		case nil:
			return buf[:len(buf)-1], true, nil
		case bufio.ErrBufferFull:
			continue
		default:
			return buf, false, err
		}
	}
}

// at is a record's position.
type at struct {
	file string
	line int
	off  int64
	seq  uint64
	hash string
}

// from names a as seen from a problem in file: "line N" in the same file.
func (a at) from(file string) string {
	if a.file == file {
		return fmt.Sprintf("line %d", a.line)
	}
	return fmt.Sprintf("%s:%d", a.file, a.line)
}

// chain checks records in order; it is the pure core of Verify.
type chain struct {
	records  int
	firstSeq uint64
	anchor   string
	last     at // the last record accepted
	// gap is a seq jump seen at the last record: reported as missing
	// records unless the next record goes back into it (a swap).
	gap *Problem
}

// file feeds every line of fr.Path to the chain.
func (c *chain) file(fr *FileRange) (*Problem, error) {
	f, err := os.Open(fr.Path)
	if err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	defer f.Close()
	return c.read(fr, f)
}

// read feeds every line of r, the content of fr, to the chain.
func (c *chain) read(fr *FileRange, r io.Reader) (*Problem, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	for n := 1; ; n++ {
		line, complete, err := readLine(br)
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("verify audit log: read %s: %w", fr.Path, err)
		}
		if len(line) == 0 && !complete {
			return nil, nil
		}
		if !complete {
			if c.gap != nil {
				return c.gap, nil
			}
			return tornProblem(fr.Path, n, off, line), nil
		}
		if prob := c.add(fr, at{file: fr.Path, line: n, off: off}, line); prob != nil {
			return prob, nil
		}
		off += int64(len(line)) + 1
	}
}

// add checks one complete line.
func (c *chain) add(fr *FileRange, pos at, line []byte) *Problem {
	p, err := parseLine(line)
	if err != nil {
		if c.gap != nil {
			return c.gap
		}
		return &Problem{Kind: ProblemMalformed, File: pos.file, Line: pos.line, Offset: pos.off, Detail: fmt.Sprintf("%v (edited or damaged)", err)}
	}
	pos.seq, pos.hash = p.seq, p.hash
	if g := c.gap; g != nil {
		if p.seq < g.Seq {
			return &Problem{Kind: ProblemReordered, File: g.File, Line: g.Line, Offset: g.Offset, Seq: g.Seq,
				Detail: fmt.Sprintf("records out of order: seq %d comes before seq %d (%s)", g.Seq, p.seq, pos.from(g.File))}
		}
		return g
	}
	if p.hash != p.computed {
		return &Problem{Kind: ProblemEdited, File: pos.file, Line: pos.line, Offset: pos.off, Seq: p.seq,
			Detail: fmt.Sprintf("record seq %d was changed after it was written: its content hashes to %s, not to its stored hash %s", p.seq, p.computed, p.hash)}
	}
	prob := func(kind ProblemKind, format string, a ...any) *Problem {
		return &Problem{Kind: kind, File: pos.file, Line: pos.line, Offset: pos.off, Seq: p.seq, Detail: fmt.Sprintf(format, a...)}
	}
	if c.records == 0 {
		if p.seq == 1 && p.prev != ZeroHash {
			return prob(ProblemBrokenLink, "seq 1 is the log's first record, but its prev is %s, not %s", p.prev, ZeroHash)
		}
		c.firstSeq, c.anchor = p.seq, p.prev
	} else {
		switch {
		case p.seq <= c.last.seq:
			return prob(ProblemReordered, "seq %d after seq %d (%s): records out of order or repeated (is a file given twice?)", p.seq, c.last.seq, c.last.from(pos.file))
		case p.seq > c.last.seq+1:
			what := "records were deleted"
			if pos.file != c.last.file {
				what = "a file is missing from the set, or records were deleted"
			}
			c.gap = prob(ProblemMissing, "seq jumps from %d (%s) to %d: records %d..%d are missing (%s)", c.last.seq, c.last.from(pos.file), p.seq, c.last.seq+1, p.seq-1, what)
		case p.prev != c.last.hash:
			return prob(ProblemBrokenLink, "its prev %s is not the hash %s of seq %d (%s): one of the two records was replaced", p.prev, c.last.hash, c.last.seq, c.last.from(pos.file))
		}
	}
	c.records++
	c.last = pos
	if fr.Records == 0 {
		fr.First = p.seq
	}
	fr.Records++
	fr.Last = p.seq
	return nil
}

// endFile checks a rotated file against the range its name gives.
func (c *chain) endFile(fr *FileRange) *Problem {
	first, last, ok := parseRotatedName(filepath.Base(fr.Path))
	if !ok || fr.Records == 0 || c.gap != nil || (first == fr.First && last == fr.Last) {
		return nil
	}
	return &Problem{Kind: ProblemCutFile, File: fr.Path, Line: fr.Records + 1, Seq: fr.Last,
		Detail: fmt.Sprintf("the file is named for seq %d..%d but holds seq %d..%d: records were removed from it (or it was renamed)", first, last, fr.First, fr.Last)}
}

// end returns what is still pending once every file is read.
func (c *chain) end() *Problem { return c.gap }
