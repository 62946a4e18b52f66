package server

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"nexus.dev/nexus/store/raftnode"
)

type clusterServer struct {
	etcdserverpb.UnimplementedClusterServer
	s *Server
}

func (c *clusterServer) members() []*etcdserverpb.Member {
	var out []*etcdserverpb.Member
	for _, m := range c.s.node.Members() {
		em := &etcdserverpb.Member{ID: m.ID, Name: m.Name, PeerURLs: []string{"quic://" + m.Addr}, IsLearner: m.Learner}
		if m.ID == c.s.cfg.ID {
			em.ClientURLs = c.s.cfg.ClientURLs
		}
		out = append(out, em)
	}
	return out
}

func (c *clusterServer) MemberList(ctx context.Context, r *etcdserverpb.MemberListRequest) (*etcdserverpb.MemberListResponse, error) {
	if r.Linearizable {
		if err := c.s.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	return &etcdserverpb.MemberListResponse{Header: c.s.header(), Members: c.members()}, nil
}

// peerFromURLs takes a member's raft address from its peer URL; the name
// comes from the URL's user part (https://name@host:port — etcd's clients
// accept only http(s) schemes, so the QUIC peer port is given as https) or
// the host.
func peerFromURLs(urls []string) (raftnode.Peer, error) {
	if len(urls) != 1 {
		return raftnode.Peer{}, status.Errorf(codes.InvalidArgument, "give exactly one peer URL (https://NAME@HOST:PORT, the member's QUIC port), got %d", len(urls))
	}
	u, err := url.Parse(urls[0])
	if err != nil || u.Host == "" {
		return raftnode.Peer{}, status.Errorf(codes.InvalidArgument, "peer URL %q is not a URL like https://NAME@HOST:PORT", urls[0])
	}
	name := u.User.Username()
	if name == "" {
		name = strings.Split(u.Hostname(), ".")[0]
	}
	return raftnode.Peer{ID: MemberID(name), Name: name, Addr: u.Host}, nil
}

func (c *clusterServer) MemberAdd(ctx context.Context, r *etcdserverpb.MemberAddRequest) (*etcdserverpb.MemberAddResponse, error) {
	p, err := peerFromURLs(r.PeerURLs)
	if err != nil {
		return nil, err
	}
	if r.IsLearner {
		err = c.s.node.AddLearner(ctx, p)
	} else {
		err = c.s.node.AddMember(ctx, p)
	}
	if err != nil {
		return nil, toGRPC(fmt.Errorf("add member %s: %w", p.Name, err))
	}
	return &etcdserverpb.MemberAddResponse{Header: c.s.header(),
		Member:  &etcdserverpb.Member{ID: p.ID, Name: p.Name, PeerURLs: r.PeerURLs, IsLearner: r.IsLearner},
		Members: c.members()}, nil
}

func (c *clusterServer) MemberRemove(ctx context.Context, r *etcdserverpb.MemberRemoveRequest) (*etcdserverpb.MemberRemoveResponse, error) {
	if err := c.s.node.RemoveMember(ctx, r.ID); err != nil {
		return nil, toGRPC(fmt.Errorf("remove member %x: %w", r.ID, err))
	}
	return &etcdserverpb.MemberRemoveResponse{Header: c.s.header(), Members: c.members()}, nil
}

func (c *clusterServer) MemberPromote(ctx context.Context, r *etcdserverpb.MemberPromoteRequest) (*etcdserverpb.MemberPromoteResponse, error) {
	if err := c.s.node.PromoteMember(ctx, r.ID); err != nil {
		return nil, toGRPC(fmt.Errorf("promote member %x: %w", r.ID, err))
	}
	return &etcdserverpb.MemberPromoteResponse{Header: c.s.header(), Members: c.members()}, nil
}

func (c *clusterServer) MemberUpdate(context.Context, *etcdserverpb.MemberUpdateRequest) (*etcdserverpb.MemberUpdateResponse, error) {
	return nil, status.Error(codes.Unimplemented, "changing a member's peer URL is not supported: remove the member and add it again")
}
