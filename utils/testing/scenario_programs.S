// Guest programs for the utils/ scenario tests (see scenario.h). Position
// independent; each image is copied into fresh guest frames and run in the
// sim's standard long-mode guest. Control blocks are filled by the tests.

// ---------------------------------------------------------------------------
// remap_loop: vCPU with RDI=0 (the remapper) runs `rounds` rounds of
//   lock; call target; unmap (entry = 0; reload CR3); remap (entry = value_b
//   on even rounds, value_a on odd ones; reload CR3); unlock; call target;
// then halts. A vCPU with RDI!=0 (the caller) loops forever on
//   lock; call target; unlock; a pause loop longer than the sim's quantum.
// `target` is a function elsewhere (`lock incq (%rsi); ret`), called with RSI
// = &ctl.calls, so ctl.calls counts every call that ran.
// ctl: +0 VA of the page-table entry to edit, +8 value_a, +16 value_b,
// +24 target VA, +32 rounds, +40 lock, +48 calls, +56 rounds done,
// +64 caller iterations.
        .section .rodata.utils_remap_loop, "a"
        .balign 4096
        .globl utils_prog_remap_loop_begin, utils_prog_remap_loop_end
        .hidden utils_prog_remap_loop_begin, utils_prog_remap_loop_end
        .globl utils_prog_remap_loop_entry, utils_prog_remap_loop_done, utils_prog_remap_loop_ctl
        .hidden utils_prog_remap_loop_entry, utils_prog_remap_loop_done, utils_prog_remap_loop_ctl
utils_prog_remap_loop_begin:
utils_prog_remap_loop_entry:
        lea utils_prog_remap_loop_ctl(%rip), %rbp
        test %rdi, %rdi
        jnz 20f
        xor %r12d, %r12d
1:      cmp 32(%rbp), %r12
        jae utils_prog_remap_loop_done
        call 30f
        lea 48(%rbp), %rsi
        call *24(%rbp)
        mov 0(%rbp), %rbx
        movq $0, (%rbx)
        mov %cr3, %rax
        mov %rax, %cr3
        mov 8(%rbp), %rax
        test $1, %r12b
        cmovz 16(%rbp), %rax
        mov %rax, (%rbx)
        mov %cr3, %rax
        mov %rax, %cr3
        call 40f
        lea 48(%rbp), %rsi
        call *24(%rbp)
        inc %r12
        mov %r12, 56(%rbp)
        jmp 1b
utils_prog_remap_loop_done:
        hlt
        jmp utils_prog_remap_loop_done
20:     call 30f
        lea 48(%rbp), %rsi
        call *24(%rbp)
        call 40f
        incq 64(%rbp)
        mov $50000, %ecx        // longer than a scheduling quantum: the remapper gets the lock
21:     pause
        dec %ecx
        jnz 21b
        jmp 20b
        // lock / unlock
30:     mov $1, %eax
31:     xchg %rax, 40(%rbp)
        test %rax, %rax
        jz 32f
        pause
        mov $1, %eax
        jmp 31b
32:     ret
40:     movq $0, 40(%rbp)
        ret
        .balign 4096
utils_prog_remap_loop_ctl:
        .fill 16, 8, 0
        .balign 4096
utils_prog_remap_loop_end:

// ---------------------------------------------------------------------------
// checksum: forever:
//   sum the 512 quadwords of its first code page (page 0) into RAX; the
//   first sum is kept in ctl.first, a different one counts in ctl.mismatch;
//   call func (page 0); write the iteration number into the immediate of
//   `patched` (page 1) and call it, which returns it in R14; a different
//   value counts in ctl.patch_mismatch; call func2 (page 1); iterations++.
// ctl: +0 first sum, +8 have first, +16 mismatches, +24 iterations,
// +32 last value `patched` returned, +40 patch mismatches, +48 last sum.
        .section .rodata.utils_checksum, "a"
        .balign 4096
        .globl utils_prog_checksum_begin, utils_prog_checksum_end, utils_prog_checksum_entry
        .hidden utils_prog_checksum_begin, utils_prog_checksum_end, utils_prog_checksum_entry
        .globl utils_prog_checksum_func, utils_prog_checksum_func2, utils_prog_checksum_patched
        .hidden utils_prog_checksum_func, utils_prog_checksum_func2, utils_prog_checksum_patched
        .globl utils_prog_checksum_ctl
        .hidden utils_prog_checksum_ctl
utils_prog_checksum_begin:
utils_prog_checksum_entry:
        lea utils_prog_checksum_ctl(%rip), %rbp
1:      xor %eax, %eax
        lea utils_prog_checksum_begin(%rip), %rsi
        mov $512, %ecx
2:      add (%rsi), %rax
        add $8, %rsi
        dec %ecx
        jnz 2b
        mov %rax, 48(%rbp)
        cmpq $0, 8(%rbp)
        jnz 3f
        mov %rax, 0(%rbp)
        movq $1, 8(%rbp)
        jmp 4f
3:      cmp %rax, 0(%rbp)
        je 4f
        incq 16(%rbp)
4:      call utils_prog_checksum_func
        mov 24(%rbp), %rax
        mov %eax, utils_prog_checksum_patched_imm(%rip)
        call utils_prog_checksum_patched
        mov %r14, 32(%rbp)
        cmp %r14, %rax
        je 5f
        incq 40(%rbp)
5:      call utils_prog_checksum_func2
        incq 24(%rbp)
        jmp 1b
utils_prog_checksum_func:
        inc %rbx
        ret
        .balign 4096
utils_prog_checksum_func2:
        inc %r13
        ret
utils_prog_checksum_patched:
        .byte 0x41, 0xbe        // mov $imm32, %r14d
utils_prog_checksum_patched_imm:
        .long 0xffffffff
        ret
        .balign 4096
utils_prog_checksum_ctl:
        .fill 8, 8, 0
        .balign 4096
utils_prog_checksum_end:

// ---------------------------------------------------------------------------
// two_roots: forever: CR3 = RSI; call kfunc; CR3 = RDI; call kfunc;
// iterations++ (ctl +0). The program is mapped alike in both spaces.
        .section .rodata.utils_two_roots, "a"
        .balign 4096
        .globl utils_prog_two_roots_begin, utils_prog_two_roots_end, utils_prog_two_roots_entry
        .hidden utils_prog_two_roots_begin, utils_prog_two_roots_end, utils_prog_two_roots_entry
        .globl utils_prog_two_roots_kfunc, utils_prog_two_roots_ctl
        .hidden utils_prog_two_roots_kfunc, utils_prog_two_roots_ctl
utils_prog_two_roots_begin:
utils_prog_two_roots_entry:
        lea utils_prog_two_roots_ctl(%rip), %rbp
1:      mov %rsi, %cr3
        call utils_prog_two_roots_kfunc
        mov %rdi, %cr3
        call utils_prog_two_roots_kfunc
        incq 0(%rbp)
        jmp 1b
utils_prog_two_roots_kfunc:
        inc %rbx
        ret
        .balign 4096
utils_prog_two_roots_ctl:
        .fill 8, 8, 0
        .balign 4096
utils_prog_two_roots_end:

// ---------------------------------------------------------------------------
// pte_flip: forever: entry = value_a; entry = value_b; count++ (ctl +24).
// ctl: +0 VA of the entry, +8 value_a, +16 value_b, +24 count.
        .section .rodata.utils_pte_flip, "a"
        .balign 4096
        .globl utils_prog_pte_flip_begin, utils_prog_pte_flip_end, utils_prog_pte_flip_entry
        .hidden utils_prog_pte_flip_begin, utils_prog_pte_flip_end, utils_prog_pte_flip_entry
        .globl utils_prog_pte_flip_ctl
        .hidden utils_prog_pte_flip_ctl
utils_prog_pte_flip_begin:
utils_prog_pte_flip_entry:
        lea utils_prog_pte_flip_ctl(%rip), %rbp
        mov 0(%rbp), %rbx
        mov 8(%rbp), %rax
        mov 16(%rbp), %rdx
1:      mov %rax, (%rbx)
        mov %rdx, (%rbx)
        incq 24(%rbp)
        jmp 1b
        .balign 4096
utils_prog_pte_flip_ctl:
        .fill 8, 8, 0
        .balign 4096
utils_prog_pte_flip_end:
        .section .note.GNU-stack, "", @progbits
