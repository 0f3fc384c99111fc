// mem_access: reads watched_data, writes watched_data+8, calls the function
// in watched_code (own page) and stores its result at watched_data+16, then
// halts. Each of the three accesses is in its own instruction (symbols
// read_insn, write_insn, call_insn) for exact traces.
        .section .rodata.sim_mem_access, "a"
        .balign 4096
        .globl sim_prog_mem_access_begin, sim_prog_mem_access_entry
        .hidden sim_prog_mem_access_begin, sim_prog_mem_access_entry
        .globl sim_prog_mem_access_read_insn, sim_prog_mem_access_write_insn
        .hidden sim_prog_mem_access_read_insn, sim_prog_mem_access_write_insn
        .globl sim_prog_mem_access_call_insn, sim_prog_mem_access_done
        .hidden sim_prog_mem_access_call_insn, sim_prog_mem_access_done
        .globl sim_prog_mem_access_watched_code, sim_prog_mem_access_watched_data
        .hidden sim_prog_mem_access_watched_code, sim_prog_mem_access_watched_data
        .globl sim_prog_mem_access_end
        .hidden sim_prog_mem_access_end
sim_prog_mem_access_begin:
sim_prog_mem_access_entry:
        lea sim_prog_mem_access_watched_data(%rip), %rsi
sim_prog_mem_access_read_insn:
        mov (%rsi), %rax
        add $1, %rax
sim_prog_mem_access_write_insn:
        mov %rax, 8(%rsi)
sim_prog_mem_access_call_insn:
        call sim_prog_mem_access_watched_code
        mov %rax, 16(%rsi)
sim_prog_mem_access_done:
        hlt
        jmp sim_prog_mem_access_done
        .balign 4096
sim_prog_mem_access_watched_code:
        mov $0x1234, %eax
        ret
        .balign 4096
sim_prog_mem_access_watched_data:
        .quad 0x1111
        .quad 0
        .quad 0
        .balign 4096
sim_prog_mem_access_end:
        .section .note.GNU-stack, "", @progbits
