package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Workload is a bounded, concurrent key-value workload.
type Workload struct {
	Endpoints    []string
	Clients      int           // concurrent clients, each with its own connection
	OpsPerClient int           // operations per client
	Keys         int           // size of the key space (small keys collide more)
	Prefix       string        // every key starts with it
	OpTimeout    time.Duration // per operation
	Seed         uint64
	// NewClient makes a client; nil means plain clientv3.New. Tests use it
	// to add TLS.
	NewClient func(endpoints []string) (*clientv3.Client, error)
}

// Stats counts what happened.
type Stats struct {
	Ops, Failed, Unknown int
}

// Run runs the workload and returns its history. Reads that fail are left
// out (they changed nothing); writes that fail are kept as Unknown.
func Run(ctx context.Context, w Workload) ([]porcupine.Operation, Stats, error) {
	if w.OpTimeout == 0 {
		w.OpTimeout = 2 * time.Second
	}
	newClient := w.NewClient
	if newClient == nil {
		newClient = func(eps []string) (*clientv3.Client, error) {
			return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second})
		}
	}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		stats   Stats
		wg      sync.WaitGroup
		errs    = make(chan error, w.Clients)
	)
	for c := 0; c < w.Clients; c++ {
		cli, err := newClient(w.Endpoints)
		if err != nil {
			return nil, stats, fmt.Errorf("client %d: %w", c, err)
		}
		defer cli.Close()
		wg.Add(1)
		go func(id int, cli *clientv3.Client) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(id)))
			for i := 0; i < w.OpsPerClient; i++ {
				if ctx.Err() != nil {
					errs <- ctx.Err()
					return
				}
				in := Input{Key: w.Prefix + strconv.Itoa(rng.IntN(w.Keys))}
				switch p := rng.IntN(10); {
				case p < 4:
					in.Kind = OpGet
				case p < 7:
					in.Kind, in.Value = OpPut, fmt.Sprintf("%d-%d", id, i)
				case p < 8:
					in.Kind = OpDelete
				default:
					in.Kind, in.Value, in.Expect = OpCAS, fmt.Sprintf("%d-%d", id, i), fmt.Sprintf("%d-%d", rng.IntN(w.Clients), rng.IntN(i+1))
				}
				call := now()
				out, err := do(ctx, cli, in, w.OpTimeout)
				ret := now()
				mu.Lock()
				stats.Ops++
				if err != nil {
					stats.Failed++
					if in.Kind == OpGet {
						mu.Unlock()
						continue
					}
					stats.Unknown++
					out, ret = Output{Unknown: true}, math.MaxInt64
				}
				history = append(history, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}(c, cli)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return history, stats, err
	}
	return history, stats, nil
}

func do(ctx context.Context, cli *clientv3.Client, in Input, timeout time.Duration) (Output, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch in.Kind {
	case OpGet:
		resp, err := cli.Get(ctx, in.Key)
		if err != nil {
			return Output{}, err
		}
		if len(resp.Kvs) == 0 {
			return Output{}, nil
		}
		return Output{Found: true, Value: string(resp.Kvs[0].Value)}, nil
	case OpPut:
		_, err := cli.Put(ctx, in.Key, in.Value)
		return Output{}, err
	case OpDelete:
		_, err := cli.Delete(ctx, in.Key)
		return Output{}, err
	case OpCAS:
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Value(in.Key), "=", in.Expect)).
			Then(clientv3.OpPut(in.Key, in.Value)).Commit()
		if err != nil {
			return Output{}, err
		}
		return Output{OK: resp.Succeeded}, nil
	}
	return Output{}, errors.New("unknown op")
}

// Check verifies a history against KVModel within timeout.
func Check(history []porcupine.Operation, timeout time.Duration) error {
	switch porcupine.CheckOperationsTimeout(KVModel, history, timeout) {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		return fmt.Errorf("history of %d operations is not linearizable", len(history))
	}
	return fmt.Errorf("linearizability check of %d operations timed out after %v", len(history), timeout)
}

// Record is one operation of a history in a form that survives JSON, so a
// workload can run in another process (inside a network namespace) and
// hand its history back.
type Record struct {
	Client int    `json:"client"`
	Input  Input  `json:"input"`
	Call   int64  `json:"call"`
	Output Output `json:"output"`
	Return int64  `json:"return"`
}

// Records converts a history for JSON.
func Records(h []porcupine.Operation) []Record {
	out := make([]Record, len(h))
	for i, op := range h {
		out[i] = Record{Client: op.ClientId, Input: op.Input.(Input), Call: op.Call, Output: op.Output.(Output), Return: op.Return}
	}
	return out
}

// History converts records back for Check.
func History(rs []Record) []porcupine.Operation {
	out := make([]porcupine.Operation, len(rs))
	for i, r := range rs {
		out[i] = porcupine.Operation{ClientId: r.Client, Input: r.Input, Call: r.Call, Output: r.Output, Return: r.Return}
	}
	return out
}
