// self_read: RDI times, adds the first quadword of its own code page to RBX
// (read_insn: a data read of the page it executes from); then reads the
// quadword at `data`, adds one and writes it back (data_read, data_write:
// a write to a page the same instruction stream just read); then halts.
        .section .rodata.sim_self_read, "a"
        .balign 4096
        .globl sim_prog_self_read_begin, sim_prog_self_read_entry
        .hidden sim_prog_self_read_begin, sim_prog_self_read_entry
        .globl sim_prog_self_read_read_insn, sim_prog_self_read_data_read
        .hidden sim_prog_self_read_read_insn, sim_prog_self_read_data_read
        .globl sim_prog_self_read_data_write, sim_prog_self_read_done
        .hidden sim_prog_self_read_data_write, sim_prog_self_read_done
        .globl sim_prog_self_read_data, sim_prog_self_read_end
        .hidden sim_prog_self_read_data, sim_prog_self_read_end
sim_prog_self_read_begin:
sim_prog_self_read_entry:
        xor %ebx, %ebx
        lea sim_prog_self_read_begin(%rip), %rsi
        test %rdi, %rdi
        jz 2f
1:
sim_prog_self_read_read_insn:
        add (%rsi), %rbx
        dec %rdi
        jnz 1b
2:      lea sim_prog_self_read_data(%rip), %rdx
sim_prog_self_read_data_read:
        mov (%rdx), %rax
        inc %rax
sim_prog_self_read_data_write:
        mov %rax, (%rdx)
sim_prog_self_read_done:
        hlt
        jmp sim_prog_self_read_done
        .balign 4096
sim_prog_self_read_data:
        .quad 0x41
        .balign 4096
sim_prog_self_read_end:
        .section .note.GNU-stack, "", @progbits
