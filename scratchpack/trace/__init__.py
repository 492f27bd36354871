"""Trace the files a program in an image really uses: strace, brought in read-only.

``scratchpack shrink IMAGE --trace`` runs the original image (its entrypoint,
command, environment, working directory and user) with its program under
strace and keeps every file the program and its children opened, executed or
stat'ed successfully. Images hold no tools, so the tracer comes from the host:
:func:`package_tracer` packages the host's ``strace`` with its closure into a
directory, which is bind-mounted read-only at :data:`TRACER_MOUNT` and started
through *its own* loader::

    /.scratchpack-tracer/<libdir>/ld-linux-x86-64.so.2 \\
        --library-path /.scratchpack-tracer/<libdir> /.scratchpack-tracer/usr/bin/strace \\
        -D -f -qq -y -s 4096 -e trace=%file,%process,fchdir,bind,rt_sigaction,... \\
        -e signal=none -e status=successful --seccomp-bpf \\
        -o /.scratchpack-trace-out/trace.log -- ARGV...

so the image's libc (glibc, musl or none) never matters. ``--library-path`` is
an option of ``ld.so``, not ``LD_LIBRARY_PATH``: the traced program inherits
none of it. ``-D`` keeps the program itself as the container's PID 1 (strace
runs as a detached grandchild), so ``docker stop`` delivers the image's
StopSignal to the program exactly as without tracing, its shutdown is traced
too, and the container's exit status is the program's.

Known blind spots: files the kernel opens without a system call (a program's
``PT_INTERP`` loader, a script's ``#!`` interpreter) are added by reading the
executed files back from the stopped container; ``/etc/ld.so.preload`` of the
image would also be loaded into the tracer; set-id programs run without their
privileges under ptrace.
"""
