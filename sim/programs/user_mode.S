// user_mode: the kernel part points LSTAR at syscall_entry and enters user
// mode with IRETQ (CS 0x33, SS 0x2b, user stack RSI). User code makes RDI
// system calls (RAX=1), executes VMCALL (vmcall_user) and INT3 (bp_user)
// once each, then calls exit (RAX=60). The kernel counts calls in kdata+0,
// #BP deliveries in kdata+8 and #UD deliveries (skipping the VMCALL) in
// kdata+16, and halts on exit. Map the image user-accessible and writable.
        .section .rodata.sim_user_mode, "a"
        .balign 4096
        .globl sim_prog_user_mode_begin, sim_prog_user_mode_entry
        .hidden sim_prog_user_mode_begin, sim_prog_user_mode_entry
        .globl sim_prog_user_mode_syscall_entry, sim_prog_user_mode_user_code
        .hidden sim_prog_user_mode_syscall_entry, sim_prog_user_mode_user_code
        .globl sim_prog_user_mode_bp_user, sim_prog_user_mode_bp_handler
        .hidden sim_prog_user_mode_bp_user, sim_prog_user_mode_bp_handler
        .globl sim_prog_user_mode_done, sim_prog_user_mode_kdata
        .hidden sim_prog_user_mode_done, sim_prog_user_mode_kdata
        .globl sim_prog_user_mode_vmcall_user, sim_prog_user_mode_ud_handler
        .hidden sim_prog_user_mode_vmcall_user, sim_prog_user_mode_ud_handler
        .globl sim_prog_user_mode_end
        .hidden sim_prog_user_mode_end
sim_prog_user_mode_begin:
sim_prog_user_mode_entry:
        lea sim_prog_user_mode_syscall_entry(%rip), %rax
        mov %rax, %rdx
        shr $32, %rdx
        mov $0xc0000082, %ecx
        wrmsr
        lea sim_prog_user_mode_user_code(%rip), %rax
        push $0x2b
        push %rsi
        push $0x202
        push $0x33
        push %rax
        iretq
sim_prog_user_mode_syscall_entry:
        cmp $60, %rax
        je sim_prog_user_mode_done
        lea sim_prog_user_mode_kdata(%rip), %rax
        incq (%rax)
        sysretq
sim_prog_user_mode_done:
        hlt
        jmp sim_prog_user_mode_done
sim_prog_user_mode_bp_handler:
        push %rax
        lea sim_prog_user_mode_kdata(%rip), %rax
        incq 8(%rax)
        pop %rax
        iretq
sim_prog_user_mode_ud_handler:
        push %rax
        lea sim_prog_user_mode_kdata(%rip), %rax
        incq 16(%rax)
        pop %rax
        addq $3, (%rsp)
        iretq
sim_prog_user_mode_user_code:
        mov %rdi, %rbx
1:      mov $1, %eax
        syscall
        dec %rbx
        jnz 1b
sim_prog_user_mode_vmcall_user:
        vmcall
sim_prog_user_mode_bp_user:
        int3
        mov $60, %eax
        syscall
        ud2
        .balign 64
sim_prog_user_mode_kdata:
        .quad 0, 0, 0
        .balign 4096
sim_prog_user_mode_end:
        .section .note.GNU-stack, "", @progbits
