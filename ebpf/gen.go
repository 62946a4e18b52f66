package ebpf

// The objects and bindings (lb_bpfel.*, lb_bpfeb.*) are committed, so
// building needs no clang; `make bpf` regenerates them (it installs clang,
// llvm and libbpf-dev from Debian when missing and sets BPF2GO_CFLAGS to
// the multiarch include directory that <asm/types.h> lives in).
//go:generate go tool bpf2go -tags linux -target bpfel,bpfeb lb bpf/lb.c -- -O2 -g -Wall -Werror
