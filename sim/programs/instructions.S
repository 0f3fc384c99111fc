// instructions: one of each intercepted instruction, in this order:
// CPUID(1,0), CPUID(7,0), IN AL,0x60, OUT DX(0x80),AL, VMCALL,
// WRMSR(0xc0000102 = 0x5566778811223344), SGDT, LGDT, SIDT, LIDT, SLDT, STR,
// MOV CR4, MOV CR0, LMSW, CLTS (all keeping the value); then writes "ok" to port 0xE9
// and halts. ud_handler (for #UD) skips a 3-byte VMCALL.
        .section .rodata.sim_instructions, "a"
        .balign 4096
        .globl sim_prog_instructions_begin, sim_prog_instructions_entry
        .hidden sim_prog_instructions_begin, sim_prog_instructions_entry
        .globl sim_prog_instructions_cpuid, sim_prog_instructions_in
        .hidden sim_prog_instructions_cpuid, sim_prog_instructions_in
        .globl sim_prog_instructions_out, sim_prog_instructions_vmcall
        .hidden sim_prog_instructions_out, sim_prog_instructions_vmcall
        .globl sim_prog_instructions_wrmsr, sim_prog_instructions_lgdt
        .hidden sim_prog_instructions_wrmsr, sim_prog_instructions_lgdt
        .globl sim_prog_instructions_mov_cr4, sim_prog_instructions_mov_cr0
        .hidden sim_prog_instructions_mov_cr4, sim_prog_instructions_mov_cr0
        .globl sim_prog_instructions_done, sim_prog_instructions_ud_handler
        .hidden sim_prog_instructions_done, sim_prog_instructions_ud_handler
        .globl sim_prog_instructions_end
        .hidden sim_prog_instructions_end
sim_prog_instructions_begin:
sim_prog_instructions_entry:
        mov $1, %eax
        xor %ecx, %ecx
sim_prog_instructions_cpuid:
        cpuid
        mov $7, %eax
        xor %ecx, %ecx
        cpuid
sim_prog_instructions_in:
        in $0x60, %al
        mov $0x80, %dx
        mov $0x42, %al
sim_prog_instructions_out:
        out %al, %dx
sim_prog_instructions_vmcall:
        vmcall
        mov $0xc0000102, %ecx
        mov $0x11223344, %eax
        mov $0x55667788, %edx
sim_prog_instructions_wrmsr:
        wrmsr
        sub $16, %rsp
        sgdt (%rsp)
sim_prog_instructions_lgdt:
        lgdt (%rsp)
        sidt (%rsp)
        lidt (%rsp)
        add $16, %rsp
        sldt %ax
        str %ax
        mov %cr4, %rax
sim_prog_instructions_mov_cr4:
        mov %rax, %cr4
        mov %cr0, %rax
sim_prog_instructions_mov_cr0:
        mov %rax, %cr0
        lmsw %ax
        clts
        mov $0xe9, %dx
        mov $'o', %al
        out %al, %dx
        mov $'k', %al
        out %al, %dx
sim_prog_instructions_done:
        hlt
        jmp sim_prog_instructions_done
sim_prog_instructions_ud_handler:
        addq $3, (%rsp)
        iretq
        .balign 4096
sim_prog_instructions_end:
        .section .note.GNU-stack, "", @progbits
