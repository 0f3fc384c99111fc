// cr3_switch: RDX times, loads CR3 from RSI, reads the quadword at RCX into
// R8 (sum), loads CR3 from RDI, reads it again into R9 (sum); then halts.
// The code must be mapped at the same address in both spaces.
        .section .rodata.sim_cr3_switch, "a"
        .balign 4096
        .globl sim_prog_cr3_switch_begin, sim_prog_cr3_switch_entry
        .hidden sim_prog_cr3_switch_begin, sim_prog_cr3_switch_entry
        .globl sim_prog_cr3_switch_done, sim_prog_cr3_switch_end
        .hidden sim_prog_cr3_switch_done, sim_prog_cr3_switch_end
sim_prog_cr3_switch_begin:
sim_prog_cr3_switch_entry:
        xor %r8d, %r8d
        xor %r9d, %r9d
1:      mov %rsi, %cr3
        add (%rcx), %r8
        mov %rdi, %cr3
        add (%rcx), %r9
        dec %rdx
        jnz 1b
sim_prog_cr3_switch_done:
        hlt
        jmp sim_prog_cr3_switch_done
        .balign 4096
sim_prog_cr3_switch_end:
        .section .note.GNU-stack, "", @progbits
