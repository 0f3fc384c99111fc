// demand_paging: writes then reads one quadword in each of RSI pages starting
// at RDI, a region left unmapped; pf_handler maps a fresh frame on first
// touch. pf_data (filled by the loader/test): +0 VA of the page-table page
// covering the region, +8 next free frame PA, +16 fault count, +24 last
// error code, +32 last CR2.
        .section .rodata.sim_demand_paging, "a"
        .balign 4096
        .globl sim_prog_demand_paging_begin, sim_prog_demand_paging_entry
        .hidden sim_prog_demand_paging_begin, sim_prog_demand_paging_entry
        .globl sim_prog_demand_paging_done, sim_prog_demand_paging_pf_handler
        .hidden sim_prog_demand_paging_done, sim_prog_demand_paging_pf_handler
        .globl sim_prog_demand_paging_pf_data, sim_prog_demand_paging_end
        .hidden sim_prog_demand_paging_pf_data, sim_prog_demand_paging_end
sim_prog_demand_paging_begin:
sim_prog_demand_paging_entry:
        mov %rdi, %rbx
        mov %rsi, %rcx
        xor %r12d, %r12d
1:      mov %rcx, (%rbx)
        add (%rbx), %r12
        add $4096, %rbx
        dec %rcx
        jnz 1b
sim_prog_demand_paging_done:
        hlt
        jmp sim_prog_demand_paging_done
sim_prog_demand_paging_pf_handler:
        push %rax
        push %rcx
        push %rdx
        push %rsi
        lea sim_prog_demand_paging_pf_data(%rip), %rsi
        mov 32(%rsp), %rax
        mov %rax, 24(%rsi)
        mov %cr2, %rax
        mov %rax, 32(%rsi)
        incq 16(%rsi)
        mov %rax, %rcx
        shr $12, %rcx
        and $511, %rcx
        mov 8(%rsi), %rdx
        addq $4096, 8(%rsi)
        or $3, %rdx
        bts $63, %rdx
        mov (%rsi), %rax
        mov %rdx, (%rax,%rcx,8)
        mov %cr2, %rax
        invlpg (%rax)
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        add $8, %rsp
        iretq
        .balign 64
sim_prog_demand_paging_pf_data:
        .quad 0, 0, 0, 0, 0
        .balign 4096
sim_prog_demand_paging_end:
        .section .note.GNU-stack, "", @progbits
