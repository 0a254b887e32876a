// What a request allocates under 'event', with nothing inlined, past 32 GiB of a 64 GiB disk: test/helpers/allocation-cases.ts.
import { defineAllocationTests } from '../helpers/allocation-cases.js';

defineAllocationTests('event', 'uninlined');
