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
