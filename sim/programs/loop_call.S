// loop_call: calls `func` RDI times (100 when RDI is 0), counting the calls
// in RBX, then halts. The breakpoint target is `func`.
        .section .rodata.sim_loop_call, "a"
        .balign 4096
        .globl sim_prog_loop_call_begin, sim_prog_loop_call_entry
        .hidden sim_prog_loop_call_begin, sim_prog_loop_call_entry
        .globl sim_prog_loop_call_func, sim_prog_loop_call_done, sim_prog_loop_call_end
        .hidden sim_prog_loop_call_func, sim_prog_loop_call_done, sim_prog_loop_call_end
sim_prog_loop_call_begin:
sim_prog_loop_call_entry:
        test %rdi, %rdi
        jnz 1f
        mov $100, %edi
1:      xor %ebx, %ebx
2:      call sim_prog_loop_call_func
        dec %rdi
        jnz 2b
sim_prog_loop_call_done:
        hlt
        jmp sim_prog_loop_call_done
sim_prog_loop_call_func:
        inc %rbx
        ret
        .balign 4096
sim_prog_loop_call_end:
        .section .note.GNU-stack, "", @progbits
