// The `vmi demo` guest: an endless kernel loop that calls `tick` (the
// breakpoint target), which increments the quadword `counter` in its own data
// page (the watched write); every 4 ticks the loop switches CR3 between the
// two address spaces in RSI and RDI, which map the kernel identically and a
// different user page at the same user address.
        .section .rodata.vmi_demo, "a"
        .balign 4096
        .globl vmi_demo_begin, vmi_demo_entry, vmi_demo_tick, vmi_demo_counter, vmi_demo_end
        .hidden vmi_demo_begin, vmi_demo_entry, vmi_demo_tick, vmi_demo_counter, vmi_demo_end
        .globl vmi_demo_exception
        .hidden vmi_demo_exception
vmi_demo_begin:
vmi_demo_entry:
        lea vmi_demo_counter(%rip), %r12
        xor %ebx, %ebx
1:      call vmi_demo_tick
        inc %rbx
        test $3, %rbx
        jnz 1b
        mov %cr3, %rax
        cmp %rax, %rsi
        je 2f
        mov %rsi, %cr3
        jmp 1b
2:      mov %rdi, %cr3
        jmp 1b
vmi_demo_tick:
        incq (%r12)
        ret
// Every exception vector points here: the demo guest never expects one, so
// it stops (and `vmi idt` has gates to show).
vmi_demo_exception:
        hlt
        jmp vmi_demo_exception
        .balign 4096
vmi_demo_counter:
        .quad 0
        .balign 4096
vmi_demo_end:
        .section .note.GNU-stack, "", @progbits
