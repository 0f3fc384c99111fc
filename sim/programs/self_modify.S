// self_modify: calls `patched` (which returns its immediate, initially
// 0x1111) and keeps the result in R12; VMCALL; rewrites that immediate to
// 0x2222; VMCALL; calls `patched` again, keeping the result in R13; halts.
// The two VMCALLs let a test move the vCPU between views (engines) around
// the guest's own code write.
        .section .rodata.sim_self_modify, "a"
        .balign 4096
        .globl sim_prog_self_modify_begin, sim_prog_self_modify_entry
        .hidden sim_prog_self_modify_begin, sim_prog_self_modify_entry
        .globl sim_prog_self_modify_patched, sim_prog_self_modify_done
        .hidden sim_prog_self_modify_patched, sim_prog_self_modify_done
        .globl sim_prog_self_modify_second_vmcall
        .hidden sim_prog_self_modify_second_vmcall
        .globl sim_prog_self_modify_end
        .hidden sim_prog_self_modify_end
sim_prog_self_modify_begin:
sim_prog_self_modify_entry:
        call sim_prog_self_modify_patched
        mov %eax, %r12d
        vmcall
        movl $0x2222, sim_prog_self_modify_patched+1(%rip)
sim_prog_self_modify_second_vmcall:
        vmcall
        call sim_prog_self_modify_patched
        mov %eax, %r13d
sim_prog_self_modify_done:
        hlt
        jmp sim_prog_self_modify_done
        .balign 4096
sim_prog_self_modify_patched:
        mov $0x1111, %eax
        ret
        .balign 4096
sim_prog_self_modify_end:
        .section .note.GNU-stack, "", @progbits
