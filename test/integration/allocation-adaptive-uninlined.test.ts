// What a request allocates under 'adaptive', with nothing inlined, past 32 GiB of a 64 GiB disk: test/helpers/allocation-cases.ts.
import { defineAllocationTests } from '../helpers/allocation-cases.js';

defineAllocationTests('adaptive', 'uninlined');
