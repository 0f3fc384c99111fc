// probe_loads: for each of the RCX quadwords at RSI (virtual addresses),
// loads one quadword from that address (probe_load), then halts. Used by the
// differential MMU test.
        .section .rodata.sim_probe_loads, "a"
        .balign 4096
        .globl sim_prog_probe_loads_begin, sim_prog_probe_loads_entry
        .hidden sim_prog_probe_loads_begin, sim_prog_probe_loads_entry
        .globl sim_prog_probe_loads_probe_load, sim_prog_probe_loads_done
        .hidden sim_prog_probe_loads_probe_load, sim_prog_probe_loads_done
        .globl sim_prog_probe_loads_end
        .hidden sim_prog_probe_loads_end
sim_prog_probe_loads_begin:
sim_prog_probe_loads_entry:
        test %rcx, %rcx
        jz sim_prog_probe_loads_done
1:      mov (%rsi), %rax
sim_prog_probe_loads_probe_load:
        mov (%rax), %rdx
        add $8, %rsi
        dec %rcx
        jnz 1b
sim_prog_probe_loads_done:
        hlt
        jmp sim_prog_probe_loads_done
        .balign 4096
sim_prog_probe_loads_end:
        .section .note.GNU-stack, "", @progbits
