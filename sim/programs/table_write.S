// table_write: loads the quadword at RDI (read_insn: its page walk may set
// accessed bits), then stores RDX at RSI (write_insn: e.g. into a page-table
// page mapped at RSI), then halts.
        .section .rodata.sim_table_write, "a"
        .balign 4096
        .globl sim_prog_table_write_begin, sim_prog_table_write_entry
        .hidden sim_prog_table_write_begin, sim_prog_table_write_entry
        .globl sim_prog_table_write_read_insn, sim_prog_table_write_write_insn
        .hidden sim_prog_table_write_read_insn, sim_prog_table_write_write_insn
        .globl sim_prog_table_write_done, sim_prog_table_write_end
        .hidden sim_prog_table_write_done, sim_prog_table_write_end
sim_prog_table_write_begin:
sim_prog_table_write_entry:
sim_prog_table_write_read_insn:
        mov (%rdi), %rax
sim_prog_table_write_write_insn:
        mov %rdx, (%rsi)
sim_prog_table_write_done:
        hlt
        jmp sim_prog_table_write_done
        .balign 4096
sim_prog_table_write_end:
        .section .note.GNU-stack, "", @progbits
