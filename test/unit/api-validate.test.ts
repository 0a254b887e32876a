import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as bufferConstants } from 'node:buffer';
import { InvalidArgumentError } from '../../src/errors.js';
import {
  checkNewBufferLength,
  checkSignal,
  checkTimeout,
  MAX_TIMEOUT_MS,
} from '../../src/api/validate.js';

test('checkNewBufferLength: a length over what one Buffer holds is an InvalidArgumentError', () => {
  // With a small limit, as on any Node.js (read() passes the running one's).
  assert.doesNotThrow(() => checkNewBufferLength('read', 4096, 4096));
  assert.throws(() => checkNewBufferLength('read', 4097, 4096), InvalidArgumentError);
  assert.throws(
    () => checkNewBufferLength('read', 4097, 4096),
    /read: length 4097 is more than one Buffer holds \(4096\); use readInto or createReadStream/,
  );
  // The default is the running Node.js's own limit.
  assert.doesNotThrow(() => checkNewBufferLength('read', bufferConstants.MAX_LENGTH));
  assert.throws(
    () => checkNewBufferLength('read', bufferConstants.MAX_LENGTH + 1),
    InvalidArgumentError,
  );
});

test('a timeout longer than a timer can wait, or not a positive number, is an InvalidArgumentError', () => {
  assert.equal(checkTimeout('timeout', MAX_TIMEOUT_MS), MAX_TIMEOUT_MS);
  assert.equal(checkTimeout('timeout', undefined), undefined);
  for (const bad of [MAX_TIMEOUT_MS + 1, 0, -1, NaN, Infinity, '5']) {
    assert.throws(() => checkTimeout('timeout', bad), InvalidArgumentError, String(bad));
  }
});

test('a signal must be an AbortSignal', () => {
  assert.doesNotThrow(() => checkSignal(undefined));
  assert.doesNotThrow(() => checkSignal(new AbortController().signal));
  for (const bad of [null, {}, 'abort', { aborted: false }]) {
    assert.throws(() => checkSignal(bad), InvalidArgumentError, String(bad));
  }
});
