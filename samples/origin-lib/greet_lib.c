/* libgreet: a private shared library, SONAME libgreet.so.1. */
#include "greet.h"

#define GREET_VERSION "1.0.0"

const char *greet_message(void)
{
    return "greetings from libgreet " GREET_VERSION;
}
