#include "textflag.h"

// func read(p unsafe.Pointer)
TEXT ·read(SB), NOSPLIT, $0-8
	MOVQ p+0(FP), AX
	PREFETCHT0 (AX)
	RET

// func write(p unsafe.Pointer)
TEXT ·write(SB), NOSPLIT, $0-8
	MOVQ p+0(FP), AX
	// PREFETCHW (AX), encoded by hand: the Go assembler lacks the
	// mnemonic. 0F 0D /1 with ModRM 0x08 ([RAX], reg=1).
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	RET

// func issue(r *uintptr, nr int, w *uintptr, nw int)
TEXT ·issue(SB), NOSPLIT, $0-32
	MOVQ r+0(FP), AX
	MOVQ nr+8(FP), CX
	TESTQ CX, CX
	JEQ writes
reads:
	MOVQ (AX), DX
	PREFETCHT0 (DX)
	ADDQ $8, AX
	DECQ CX
	JNE reads
writes:
	MOVQ w+16(FP), AX
	MOVQ nw+24(FP), CX
	TESTQ CX, CX
	JEQ done
wloop:
	MOVQ (AX), DX
	// PREFETCHW (DX): 0F 0D /1, ModRM 0x0A ([RDX], reg=1).
	BYTE $0x0F; BYTE $0x0D; BYTE $0x0A
	ADDQ $8, AX
	DECQ CX
	JNE wloop
done:
	RET
