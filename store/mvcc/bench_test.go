package mvcc

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func BenchmarkPut(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"fsync", Options{}},
		{"nofsync", Options{UnsafeNoFsync: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := openTestStore(b, tc.opts)
			value := []byte(strings.Repeat("v", 256))
			reqs := make([]*pb.InternalRaftRequest, 1000)
			for i := range reqs {
				reqs[i] = &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%06d", i), Value: value}}
			}
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if res := s.Apply(uint64(i+1), reqs[i%len(reqs)]); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

func BenchmarkRange(b *testing.B) {
	s := openTestStore(b, Options{UnsafeNoFsync: true})
	value := []byte(strings.Repeat("v", 256))
	for i := range 10000 {
		mustApply(b, s, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%05d", i), Value: value}})
	}
	for _, tc := range []struct {
		name string
		req  *pb.RangeRequest
	}{
		{"key", &pb.RangeRequest{Key: []byte("key-05000")}},
		{"prefix100", &pb.RangeRequest{Key: []byte("key-050"), RangeEnd: []byte("key-051")}},
		{"count10000", &pb.RangeRequest{Key: []byte("key-"), RangeEnd: []byte("key."), CountOnly: true}},
		{"historic", &pb.RangeRequest{Key: []byte("key-05000"), Revision: 100}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Range(b.Context(), tc.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
